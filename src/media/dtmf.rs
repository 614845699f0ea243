//! RFC 4733 telephone-event reception. Every packet of one key press carries the same RTP
//! timestamp (the event's start), and the end packet is sent three times; so a press is reported
//! once, on the first packet of a new (timestamp, event) pair, whether or not its start packets
//! were lost.

#[derive(Debug, Default)]
pub struct DtmfReceiver {
    last: Option<(u32, u8)>,
}

impl DtmfReceiver {
    /// Feeds one telephone-event payload with its RTP timestamp; returns the digit if this
    /// packet starts a new key press. Malformed payloads are ignored.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        if payload.len() < 4 {
            return None;
        }
        let event = payload[0];
        let digit = event_char(event)?;
        if self.last == Some((timestamp, event)) {
            return None;
        }
        self.last = Some((timestamp, event));
        Some(digit)
    }
}

pub fn event_char(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        _ => return None,
    })
}

pub fn char_event(c: char) -> Option<u8> {
    Some(match c {
        '0'..='9' => c as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => c as u8 - b'A' + 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn one_press_with_redundant_end_packets_is_one_digit() {
        let mut r = DtmfReceiver::default();
        let mut got = vec![];
        for (i, end) in [false, false, false, true, true, true]
            .into_iter()
            .enumerate()
        {
            if let Some(d) = r.on_packet(1000, &pkt(5, end, 160 * (i as u16 + 1))) {
                got.push(d);
            }
        }
        assert_eq!(got, vec!['5']);
    }

    #[test]
    fn same_digit_twice_is_two_presses() {
        let mut r = DtmfReceiver::default();
        assert_eq!(r.on_packet(1000, &pkt(1, true, 800)), Some('1'));
        assert_eq!(r.on_packet(1000, &pkt(1, true, 800)), None);
        assert_eq!(r.on_packet(3000, &pkt(1, false, 160)), Some('1'));
    }

    #[test]
    fn only_end_packets_still_count_and_junk_is_ignored() {
        let mut r = DtmfReceiver::default();
        assert_eq!(r.on_packet(7, &pkt(11, true, 400)), Some('#'));
        assert_eq!(r.on_packet(9, &[1, 2]), None);
        assert_eq!(r.on_packet(9, &pkt(200, false, 1)), None);
    }
}
