//! ACD races with SIPp seats: a seat that rejects (486) is counted and the caller keeps
//! waiting; a caller who hangs up while a seat rings makes the daemon CANCEL the offer and the
//! seat is free again at once, never stuck ringing.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn seat_rejects_the_offer_and_the_caller_keeps_waiting() {
    // no keep-alive OPTIONS: the SIPp phone only knows the one call it plays
    let d = Daemon::start(&[("HOTLINE__REGISTRAR__QUALIFY_S", "0")]);
    let port = free_port();
    register_from_port(&d, "1004", "demo-1004", port);
    let seat_phone = sipp_uas(&d, "agent_reject.xml", port);
    agent_api(&d, "1004", "login");
    let sink = RtpSink::new();
    let greeting = prompt_frames("greetings/12333") as u64 * 20;
    let out = sipp(
        &d,
        "uac_call.xml",
        "12333",
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &(greeting + 3000).to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    child_ok(seat_phone, "seat phone");
    let view = seat(&d, "1004");
    assert_eq!(view["counters"]["offered"], 1);
    assert_eq!(view["counters"]["rejected"], 1);
    assert_eq!(view["counters"]["answered"], 0);
    assert_eq!(view["state"], "available");
    // the caller heard hold music after the greeting, never silence
    let heard = decode_pcmu(&sink.packets());
    assert_heard_at(
        &heard,
        "please-hold",
        prompt_frames("greetings/12333") * 160,
    );
    d.wait_idle(Duration::from_secs(5));
}

#[test]
fn caller_hangs_up_while_the_seat_rings_and_the_offer_is_cancelled() {
    // no keep-alive OPTIONS: the SIPp phone only knows the one call it plays
    let d = Daemon::start(&[("HOTLINE__REGISTRAR__QUALIFY_S", "0")]);
    let port = free_port();
    register_from_port(&d, "1004", "demo-1004", port);
    let seat_phone = sipp_uas(&d, "agent_ring_cancelled.xml", port);
    agent_api(&d, "1004", "login");
    let sink = RtpSink::new();
    let greeting = prompt_frames("greetings/12333") as u64 * 20;
    // hang up 1.5 s into the ringing
    let out = sipp(
        &d,
        "uac_call.xml",
        "12333",
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &(greeting + 1500).to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    child_ok(seat_phone, "seat phone");
    let view = wait_seat(
        &d,
        "1004",
        Duration::from_secs(2),
        "seat free again at once",
        |s| s["state"] == "available",
    );
    assert_eq!(view["counters"]["offered"], 1);
    assert_eq!(
        view["counters"]["missed"], 0,
        "a caller hanging up is not the agent's miss"
    );
    d.wait_idle(Duration::from_secs(5));
}
