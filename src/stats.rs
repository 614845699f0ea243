//! Counters shared between call control, the runtime and the HTTP endpoint. Plain atomics:
//! written from one place each, read by `/healthz` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub invites: AtomicU64,
    pub calls_answered: AtomicU64,
    pub calls_active: AtomicU64,
    pub calls_ended: AtomicU64,
    pub invites_refused: AtomicU64,
    pub cancelled: AtomicU64,
    pub malformed_answered: AtomicU64,
    pub malformed_dropped: AtomicU64,
    pub rtp_sent: AtomicU64,
    pub rtp_received: AtomicU64,
    pub rtp_malformed: AtomicU64,
    pub rtp_foreign: AtomicU64,
    pub rtp_relayed: AtomicU64,
    pub rtp_send_errors: AtomicU64,
    pub rtp_frames_skipped: AtomicU64,
    pub dtmf_digits: AtomicU64,
    pub bye_timeouts: AtomicU64,
    pub sip_send_errors: AtomicU64,
    pub rtp_mixed: AtomicU64,
    pub conferences_active: AtomicU64,
    pub transfers_active: AtomicU64,
    pub probes: AtomicU64,
    /// New calls shed by overload control (503 or the busy prompt), in all and by reason.
    pub calls_shed: AtomicU64,
    pub calls_shed_lag: AtomicU64,
    pub calls_shed_ceiling: AtomicU64,
    pub calls_shed_ports: AtomicU64,
    /// Shed callers answered with the busy prompt instead of 503.
    pub calls_busy_prompt: AtomicU64,
    /// 1 while new calls are shed because the event loop runs late.
    pub overloaded: AtomicU64,
    /// The media clock's lateness, smoothed (µs).
    pub loop_lag_us: AtomicU64,
    /// Calls closed without their end being seen: at shutdown with BYEs unanswered, or found
    /// open in the store after a crash.
    pub calls_lost: AtomicU64,
    /// 1 once SIGTERM came: new calls are refused while the calls in progress finish.
    pub draining: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_handshake_failures: AtomicU64,
    /// SRTP packets dropped: authentication tag wrong (tampered, or the wrong key).
    pub srtp_auth_failures: AtomicU64,
    /// SRTP packets dropped as replays (already seen, or too old for the replay window).
    pub srtp_replays: AtomicU64,
    /// Browser legs (WebRTC): ICE checks answered and refused (not for us, wrong integrity),
    /// DTLS-SRTP handshakes completed and failed (or timed out), RTCP packets not read.
    pub webrtc_ice_checks: AtomicU64,
    pub webrtc_ice_refused: AtomicU64,
    pub webrtc_dtls_ok: AtomicU64,
    pub webrtc_dtls_failed: AtomicU64,
    pub rtcp_ignored: AtomicU64,
    /// Events copied to PostgreSQL; events stored but not yet copied; 1 while connected.
    pub ship_shipped: AtomicU64,
    pub ship_lag: AtomicU64,
    pub ship_connected: AtomicU64,
    /// Events published to the NATS feed (acknowledged); not yet published; 1 while connected.
    pub feed_published: AtomicU64,
    pub feed_lag: AtomicU64,
    pub feed_connected: AtomicU64,
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition of every counter.
    pub fn prometheus(&self) -> String {
        let rows: [(&str, &str, &AtomicU64, &str); 43] = [
            (
                "hotline_invites_total",
                "counter",
                &self.invites,
                "New INVITEs received",
            ),
            (
                "hotline_calls_answered_total",
                "counter",
                &self.calls_answered,
                "Calls answered with 200 OK",
            ),
            (
                "hotline_calls_active",
                "gauge",
                &self.calls_active,
                "Calls in progress",
            ),
            (
                "hotline_calls_ended_total",
                "counter",
                &self.calls_ended,
                "Calls ended",
            ),
            (
                "hotline_invites_refused_total",
                "counter",
                &self.invites_refused,
                "INVITEs answered with a final error",
            ),
            (
                "hotline_calls_cancelled_total",
                "counter",
                &self.cancelled,
                "Calls cancelled before answer",
            ),
            (
                "hotline_sip_malformed_answered_total",
                "counter",
                &self.malformed_answered,
                "Malformed SIP answered with 400/501",
            ),
            (
                "hotline_sip_malformed_dropped_total",
                "counter",
                &self.malformed_dropped,
                "Malformed SIP dropped (no response possible)",
            ),
            (
                "hotline_rtp_sent_total",
                "counter",
                &self.rtp_sent,
                "RTP packets sent",
            ),
            (
                "hotline_rtp_received_total",
                "counter",
                &self.rtp_received,
                "RTP packets received",
            ),
            (
                "hotline_rtp_malformed_total",
                "counter",
                &self.rtp_malformed,
                "Malformed RTP packets dropped",
            ),
            (
                "hotline_rtp_relayed_total",
                "counter",
                &self.rtp_relayed,
                "RTP packets relayed between a caller and a seat",
            ),
            (
                "hotline_rtp_foreign_total",
                "counter",
                &self.rtp_foreign,
                "RTP packets from a source the call does not accept",
            ),
            (
                "hotline_rtp_send_errors_total",
                "counter",
                &self.rtp_send_errors,
                "RTP packets the socket refused",
            ),
            (
                "hotline_rtp_frames_skipped_total",
                "counter",
                &self.rtp_frames_skipped,
                "20 ms frames skipped because the media clock ran late",
            ),
            (
                "hotline_dtmf_digits_total",
                "counter",
                &self.dtmf_digits,
                "DTMF digits received",
            ),
            (
                "hotline_bye_timeouts_total",
                "counter",
                &self.bye_timeouts,
                "BYEs that got no response",
            ),
            (
                "hotline_sip_send_errors_total",
                "counter",
                &self.sip_send_errors,
                "SIP messages the socket refused (recovered by retransmission)",
            ),
            (
                "hotline_rtp_mixed_total",
                "counter",
                &self.rtp_mixed,
                "RTP packets of mixed conference audio sent",
            ),
            (
                "hotline_conferences_active",
                "gauge",
                &self.conferences_active,
                "Three-way calls (caller, agent, target) in progress",
            ),
            (
                "hotline_transfers_active",
                "gauge",
                &self.transfers_active,
                "Transfers and hand-offs dialling or in a three-way call",
            ),
            (
                "hotline_probes_total",
                "counter",
                &self.probes,
                "Answer-rate probe calls placed",
            ),
            (
                "hotline_calls_shed_total",
                "counter",
                &self.calls_shed,
                "New calls shed by overload control (503 or the busy prompt)",
            ),
            (
                "hotline_calls_shed_lag_total",
                "counter",
                &self.calls_shed_lag,
                "New calls shed because the event loop ran late",
            ),
            (
                "hotline_calls_shed_ceiling_total",
                "counter",
                &self.calls_shed_ceiling,
                "New calls shed at overload.max_calls or overload.calls_per_s",
            ),
            (
                "hotline_calls_shed_ports_total",
                "counter",
                &self.calls_shed_ports,
                "New calls shed because only the ports kept for emergency hand-offs were left",
            ),
            (
                "hotline_calls_busy_prompt_total",
                "counter",
                &self.calls_busy_prompt,
                "Shed callers answered with the busy prompt",
            ),
            (
                "hotline_overloaded",
                "gauge",
                &self.overloaded,
                "1 while new calls are shed because the event loop runs late",
            ),
            (
                "hotline_calls_lost_total",
                "counter",
                &self.calls_lost,
                "Calls closed as lost (BYE unanswered at shutdown, or open in the store after a crash)",
            ),
            (
                "hotline_tls_handshake_failures_total",
                "counter",
                &self.tls_handshake_failures,
                "TLS handshakes on the SIP TLS port that failed or did not finish in time",
            ),
            (
                "hotline_srtp_auth_failures_total",
                "counter",
                &self.srtp_auth_failures,
                "SRTP packets dropped for a wrong authentication tag",
            ),
            (
                "hotline_srtp_replays_total",
                "counter",
                &self.srtp_replays,
                "SRTP packets dropped as replays",
            ),
            (
                "hotline_webrtc_ice_checks_total",
                "counter",
                &self.webrtc_ice_checks,
                "ICE connectivity checks answered on browser legs",
            ),
            (
                "hotline_webrtc_ice_refused_total",
                "counter",
                &self.webrtc_ice_refused,
                "ICE checks refused on browser legs (unknown user or wrong integrity)",
            ),
            (
                "hotline_webrtc_dtls_handshakes_total",
                "counter",
                &self.webrtc_dtls_ok,
                "DTLS-SRTP handshakes completed on browser legs",
            ),
            (
                "hotline_webrtc_dtls_failures_total",
                "counter",
                &self.webrtc_dtls_failed,
                "DTLS-SRTP handshakes on browser legs that failed or did not complete in time",
            ),
            (
                "hotline_rtcp_ignored_total",
                "counter",
                &self.rtcp_ignored,
                "RTCP packets received on rtcp-mux legs and not read",
            ),
            (
                "hotline_store_shipped_total",
                "counter",
                &self.ship_shipped,
                "Events copied to PostgreSQL (store.postgres)",
            ),
            (
                "hotline_store_ship_lag_events",
                "gauge",
                &self.ship_lag,
                "Events in the local store not yet copied to PostgreSQL",
            ),
            (
                "hotline_store_ship_connected",
                "gauge",
                &self.ship_connected,
                "1 while the shipper is connected to PostgreSQL",
            ),
            (
                "hotline_feed_published_total",
                "counter",
                &self.feed_published,
                "Events published to the NATS feed and acknowledged by JetStream",
            ),
            (
                "hotline_feed_lag_events",
                "gauge",
                &self.feed_lag,
                "Events in the local store not yet published to the NATS feed",
            ),
            (
                "hotline_feed_connected",
                "gauge",
                &self.feed_connected,
                "1 while the feed is connected to NATS",
            ),
        ];
        let mut s = String::new();
        for (name, kind, v, help) in rows {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                Self::get(v)
            ));
        }
        let name = "hotline_event_loop_lag_seconds";
        s.push_str(&format!(
            "# HELP {name} Lateness of the media clock (the event loop), smoothed\n# TYPE {name} gauge\n{name} {:.6}\n",
            Self::get(&self.loop_lag_us) as f64 / 1e6
        ));
        s
    }
}
