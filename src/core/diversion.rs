//! 110 non-police diversion (110 非警务类诉求分流): a call 110's trunk hands over carries 110's
//! incident reference in `diversion.incident_header`; the seat is shown it
//! (`X-Hotline-110-Incident`) and the call's `call_start` record keeps it. Our own hand-off to
//! an emergency centre carries the 12345 call reference in `diversion.call_ref_header` (and
//! 110's incident reference back, where the call came from 110).

use super::*;
use crate::config::TargetKind;

/// An incident reference as the network gave it, if it is one: 1 to 64 of letters, digits
/// and `-_./:`; anything else is not shown to seats or stored.
pub(super) fn incident_reference(v: &str) -> Option<String> {
    let v = v.trim();
    ((1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b)))
    .then(|| v.to_string())
}

impl<M: MediaIo> Core<M> {
    /// The headers a transfer of caller `k` to `target` carries for the emergency centre.
    pub(super) fn diversion_headers(&self, k: CallerId, target: usize) -> Vec<(String, String)> {
        let emergency = self
            .env
            .cfg
            .targets
            .get(target)
            .is_some_and(|t| t.kind == TargetKind::Emergency);
        let Some(c) = self.legs.callers.get(&k).filter(|_| emergency) else {
            return vec![];
        };
        let d = &self.env.cfg.diversion;
        let mut h = vec![(d.call_ref_header.clone(), c.call_id.clone())];
        if let Some(i) = &c.incident {
            h.push((d.incident_header.clone(), i.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::incident_reference;

    #[test]
    fn only_plain_references_pass() {
        assert_eq!(
            incident_reference(" JJ110-20261215-0042 ").as_deref(),
            Some("JJ110-20261215-0042")
        );
        assert_eq!(incident_reference("a\"b"), None);
        assert_eq!(incident_reference(""), None);
        assert_eq!(incident_reference(&"x".repeat(65)), None);
    }
}
