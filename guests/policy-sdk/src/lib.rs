//! The SOTP correlation policy SDK: a policy is one file implementing [`CorrelationPolicy`] and
//! a manifest with `world = "correlation-policy"`.
//!
//! The host hands the policy batches of alerts (new, changed, or held ones whose time came);
//! the policy reads the topology and what is firing through [`host::topology`] and answers
//! with [`Decision`]s. Incidents live in the host: a policy keeps no state of its own that
//! matters across batches, so a hot swap loses nothing.
//!
//! A crate of its own, as the rule SDK is: each SDK carries its world's component type.

/// The raw `wit-bindgen` bindings.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "correlation-policy",
        pub_export_macro: true,
        export_macro_name: "__export_correlation_policy_world",
        default_bindings_module: "sotp_policy::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::sotp::telemetry::correlation_types::{
    Alert, AlertStatus, Annotation, Decision, HoldAlert, Incident, OpenIncident, Retitle,
    SuppressAlert,
};
pub use bindings::sotp::telemetry::topology::NodeInfo;
pub use serde_json;

/// The host interfaces a policy may use.
pub mod host {
    pub use crate::bindings::sotp::telemetry::{log, topology};
}

/// What a correlation policy implements.
pub trait CorrelationPolicy: Sized + 'static {
    /// Build the policy's settings from the manifest's `[config]` table (a JSON object).
    fn init(config: &serde_json::Value) -> Result<Self, String>;

    /// The decisions on `batch` at `now_ms`. An alert left without a decision passes.
    fn decide(&mut self, now_ms: i64, batch: &[Alert]) -> Result<Vec<Decision>, String>;
}

impl Alert {
    /// The value of a label, if the alert has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }
}

/// Export `$ty` (a [`CorrelationPolicy`]) as the component's `correlation-policy` world.
#[macro_export]
macro_rules! policy {
    ($ty:ty) => {
        const _: () = {
            use ::std::cell::RefCell;

            ::std::thread_local! {
                static STATE: RefCell<Option<$ty>> = const { RefCell::new(None) };
            }

            struct Export;

            impl $crate::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let config: $crate::serde_json::Value = $crate::serde_json::from_str(&config)
                        .map_err(|e| format!("config is not JSON: {e}"))?;
                    let state = <$ty as $crate::CorrelationPolicy>::init(&config)?;
                    STATE.with(|s| *s.borrow_mut() = Some(state));
                    Ok(())
                }

                fn decide(
                    now_ms: i64,
                    batch: Vec<$crate::Alert>,
                ) -> Result<Vec<$crate::Decision>, String> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(state) => $crate::CorrelationPolicy::decide(state, now_ms, &batch),
                        None => Err("decide before init".to_string()),
                    })
                }
            }

            $crate::bindings::__export_correlation_policy_world!(Export with_types_in $crate::bindings);
        };
    };
}
