//! re-INVITE keeps the call: hold (sendonly) stops our media and is answered recvonly;
//! resume to a new port moves the media there with the sequence unbroken.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn hold_and_resume_to_a_new_address() {
    let d = Daemon::start(&[]);
    let (a, b) = (RtpSink::new(), RtpSink::new());
    let out = sipp(
        &d,
        "uac_reinvite_hold.xml",
        "12345",
        &[
            "-key",
            "rtp_port",
            &a.port.to_string(),
            "-key",
            "rtp_port2",
            &b.port.to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    let (pa, pb) = (a.packets(), b.packets());
    assert!(pa.len() >= 50, "media before hold: {}", pa.len());
    assert!(pb.len() >= 50, "media after resume: {}", pb.len());
    let held = pb[0].at.duration_since(pa.last().unwrap().at);
    assert!(held >= Duration::from_millis(1200), "hold lasted {held:?}");
    assert_eq!(
        pb[0].seq,
        pa.last().unwrap().seq.wrapping_add(1),
        "sequence continues across hold"
    );
    assert_eq!(pb[0].ssrc, pa[0].ssrc);
    assert!(pb[0].marker, "marker bit after resume");
    d.wait_idle(Duration::from_secs(2));
}
