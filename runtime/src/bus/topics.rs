//! The topics SOTP keeps for itself beside the flows topic — `<topic>-templates` (inlets'
//! template state, `templates.rs`) and `<topic>-commits` (stores' commit markers,
//! `consume.rs`) — must be **compacted** (Kafka keeps each key's newest record for good),
//! which a broker's automatic topic creation does not do. So SOTP creates them itself, once,
//! before it writes to them; a deployment may create them beforehand (docs/SCALE.md).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A topic's `cleanup.policy`.
async fn cleanup_policy(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    options: &AdminOptions,
) -> Result<String, String> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], options)
        .await
        .map_err(|e| e.to_string())?;
    let resource = described
        .into_iter()
        .next()
        .ok_or("no answer")?
        .map_err(|e| e.to_string())?;
    Ok(resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .unwrap_or_default())
}

/// Segments of the commit markers' topic: Kafka compacts only closed segments, and a store
/// reads the topic from its beginning at every start, so segments close every 10 minutes.
pub const COMMITS_SEGMENT: Duration = Duration::from_secs(600);
/// Segments of the template topic (changes are rare; an inlet reads it whole at its start).
pub const TEMPLATES_SEGMENT: Duration = Duration::from_secs(3600);

/// Run `request` against an admin client of `brokers` on a thread of its own with a
/// current-thread runtime: safe from inside or outside an async runtime. Blocks up to ~10 s.
fn admin_request<T: Send + 'static>(
    brokers: &str,
    request: impl FnOnce(
        &AdminClient<DefaultClientContext>,
        &AdminOptions,
        &tokio::runtime::Runtime,
    ) -> Result<T, String>
    + Send
    + 'static,
) -> Result<T, String> {
    let brokers = brokers.to_string();
    std::thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        request(&admin, &options, &runtime)
    })
    .join()
    .unwrap_or_else(|_| Err("the topic request panicked".into()))
}

/// Ask for `new` to be created: Ok(None) if it was, Ok(Some(code)) why not.
fn create(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    runtime: &tokio::runtime::Runtime,
    new: &NewTopic<'_>,
) -> Result<Option<RDKafkaErrorCode>, String> {
    let results = runtime
        .block_on(admin.create_topics([new], options))
        .map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(None),
        Some(Err((_, code))) => Ok(Some(code)),
        None => Err("no answer to the topic request".into()),
    }
}

/// Create `topic` (the brokers' default partitions, replication and retention) unless it
/// exists: a topic consumers subscribe to before any producer wrote to it.
pub fn ensure_exists(brokers: &str, topic: &str) -> Result<(), String> {
    let name = topic.to_string();
    admin_request(brokers, move |admin, options, runtime| {
        let new = NewTopic::new(&name, -1, TopicReplication::Fixed(-1));
        match create(admin, options, runtime, &new)? {
            None | Some(RDKafkaErrorCode::TopicAlreadyExists) => Ok(()),
            Some(code) => Err(code.to_string()),
        }
    })
}

/// Create `topic` compacted with `partitions` (-1: the brokers' default), the brokers'
/// default replication and `segment` long segments (compacted early), unless it exists.
pub fn ensure_compacted(
    brokers: &str,
    topic: &str,
    partitions: i32,
    segment: Duration,
) -> Result<(), String> {
    let name = topic.to_string();
    admin_request(brokers, move |admin, options, runtime| {
        let segment_ms = segment.as_millis().to_string();
        let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            .set("segment.ms", &segment_ms)
            .set("min.cleanable.dirty.ratio", "0.1");
        let Some(code) = create(admin, options, runtime, &new)? else {
            tracing::info!(topic = %name, "created the compacted topic");
            return Ok(());
        };
        // Exists, or this client may not create topics (it may exist all the same): good if
        // compacted.
        match runtime.block_on(cleanup_policy(admin, &name, options)) {
            Ok(policy) if policy.contains("compact") => Ok(()),
            // Just created by another node: its configuration is not readable yet.
            Ok(policy) if policy.is_empty() => {
                Err("the topic exists but its configuration is not readable yet".into())
            }
            Ok(policy) => Err(format!(
                "the topic exists with cleanup.policy={policy}; it must be compacted (cleanup.policy=compact)"
            )),
            Err(e) if code == RDKafkaErrorCode::TopicAlreadyExists => Err(e),
            Err(e) => Err(format!("{code}; describing it: {e}")),
        }
    })
}
