//! Grant checks: the one place that decides whether a manifest allows a host call.
//!
//! Every host capability asks here on its first line. Keeping the matching rules together
//! makes them reviewable and testable without a running guest.

use crate::manifest::Grants;

/// Why a grant check failed; the text goes back to the guest inside `error::denied`.
pub fn deny_secret(grants: &Grants, name: &str) -> Option<String> {
    if grants.secrets.iter().any(|g| g == name) {
        None
    } else {
        Some(format!("secret `{name}` is not listed in grants.secrets"))
    }
}

/// Whether `grants.devices` covers a device (by name, tag, site, role or address range).
pub fn deny_device(grants: &Grants, device: &crate::inventory::Device) -> Option<String> {
    if grants.devices.iter().any(|g| device.granted_by(g)) {
        None
    } else {
        Some(format!(
            "device `{}` is not covered by grants.devices {:?}",
            device.name, grants.devices
        ))
    }
}

/// Whether a concrete topic may be published to: some filter in `grants.publish` matches it.
pub fn deny_publish(grants: &Grants, topic: &str) -> Option<String> {
    if grants.publish.iter().any(|g| topic_matches(g, topic)) {
        None
    } else {
        Some(format!(
            "publishing to `{topic}` is not allowed by grants.publish {:?}",
            grants.publish
        ))
    }
}

/// Whether a requested MQTT subscription filter lies entirely inside some granted filter.
pub fn deny_topic(grants: &Grants, requested: &str) -> Option<String> {
    if grants.topics.iter().any(|g| filter_covers(g, requested)) {
        None
    } else {
        Some(format!(
            "topic filter `{requested}` is not covered by grants.topics {:?}",
            grants.topics
        ))
    }
}

/// True if every topic matched by `requested` is also matched by `grant`.
pub fn filter_covers(grant: &str, requested: &str) -> bool {
    let mut g = grant.split('/');
    let mut r = requested.split('/');
    loop {
        match (g.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => continue,
            (Some(gl), Some(rl)) if gl == rl && gl != "+" => continue,
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if `topic` (a concrete topic, no wildcards) matches `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => continue,
            (Some(fl), Some(tl)) if fl == tl => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

pub fn validate_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!(
                "`{filter}`: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a secret name: use letters, digits and - _ . / (at most 128)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_narrower_filters_only() {
        assert!(filter_covers("home/#", "home/kitchen/temperature"));
        assert!(filter_covers("home/#", "home/+/temperature"));
        assert!(filter_covers(
            "home/+/temperature",
            "home/kitchen/temperature"
        ));
        assert!(filter_covers("home/+/temperature", "home/+/temperature"));
        assert!(!filter_covers("home/+/temperature", "home/#"));
        assert!(!filter_covers(
            "home/+/temperature",
            "home/kitchen/humidity"
        ));
        assert!(!filter_covers("home/kitchen", "home/+"));
        assert!(!filter_covers("home", "home/kitchen"));
        assert!(!filter_covers("office/#", "home/kitchen"));
        assert!(filter_covers("#", "anything/at/all"));
    }

    #[test]
    fn topics_match_filters() {
        assert!(topic_matches(
            "home/+/temperature",
            "home/kitchen/temperature"
        ));
        assert!(topic_matches("home/#", "home/a/b/c"));
        assert!(!topic_matches("home/+", "home/a/b"));
    }

    #[test]
    fn filter_syntax_is_checked() {
        assert!(validate_topic_filter("a/+/b/#").is_ok());
        assert!(validate_topic_filter("a/#/b").is_err());
        assert!(validate_topic_filter("a/b+").is_err());
    }
}
