//! The queue's spoken figures: "您前面还有 N 位来电者在等候" and "预计等待时间约 N 分钟",
//! composed from counting-word prompts (二十三 = 二 十 三; 两 before a measure word).
//! Missing prompts make the announcement shorter, never fail it.

use crate::media::prompts::{PromptId, PromptStore};

#[derive(Debug, Clone, Default)]
pub struct QueuePrompts {
    ahead: Option<PromptId>,
    callers: Option<PromptId>,
    next: Option<PromptId>,
    wait: Option<PromptId>,
    minutes: Option<PromptId>,
    more_than: Option<PromptId>,
    /// 零 .. 十
    count: Vec<Option<PromptId>>,
    liang: Option<PromptId>,
}

/// The highest count spoken; above it "超过九十九".
const MAX_SPOKEN: usize = 99;

impl QueuePrompts {
    pub fn new(store: &PromptStore) -> Self {
        QueuePrompts {
            ahead: store.id("queue/ahead"),
            callers: store.id("queue/callers"),
            next: store.id("queue/next"),
            wait: store.id("queue/wait"),
            minutes: store.id("queue/minutes"),
            more_than: store.id("queue/more-than"),
            count: (0..=10).map(|i| store.id(&format!("count/{i}"))).collect(),
            liang: store.id("count/liang"),
        }
    }

    /// The prompts for a caller at `position` (1 = next to be served).
    pub fn position(&self, position: usize) -> Vec<PromptId> {
        if position <= 1 {
            return self.next.into_iter().collect();
        }
        let mut v: Vec<Option<PromptId>> = vec![self.ahead];
        v.extend(self.number(position - 1));
        v.push(self.callers);
        v.into_iter().flatten().collect()
    }

    /// The prompts for an expected wait of `minutes`.
    pub fn wait(&self, minutes: u64) -> Vec<PromptId> {
        let mut v: Vec<Option<PromptId>> = vec![self.wait];
        v.extend(self.number(minutes.max(1) as usize));
        v.push(self.minutes);
        v.into_iter().flatten().collect()
    }

    /// A count before a measure word (位, 分钟), as words.
    fn number(&self, n: usize) -> Vec<Option<PromptId>> {
        let word = |i: usize| self.count.get(i).copied().flatten();
        let mut v = Vec::new();
        let n = if n > MAX_SPOKEN {
            v.push(self.more_than);
            MAX_SPOKEN
        } else {
            n
        };
        match n {
            2 => v.push(self.liang),
            0..=10 => v.push(word(n)),
            11..=19 => v.extend([word(10), word(n % 10)]),
            _ => {
                v.extend([word(n / 10), word(10)]);
                if n % 10 != 0 {
                    v.push(word(n % 10));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: &QueuePrompts, store: &PromptStore, ids: Vec<PromptId>) -> Vec<String> {
        let _ = p;
        ids.into_iter()
            .map(|id| store.get(id).name.clone())
            .collect()
    }

    #[test]
    fn numbers_are_read_as_counting_words() {
        let mut store = PromptStore::default();
        for n in [
            "queue/ahead",
            "queue/callers",
            "queue/next",
            "queue/wait",
            "queue/minutes",
            "queue/more-than",
            "count/liang",
        ] {
            store.insert(n, &[0; 160]);
        }
        for i in 0..=10 {
            store.insert(&format!("count/{i}"), &[0; 160]);
        }
        let p = QueuePrompts::new(&store);
        assert_eq!(words(&p, &store, p.position(1)), ["queue/next"]);
        assert_eq!(
            words(&p, &store, p.position(3)),
            ["queue/ahead", "count/liang", "queue/callers"]
        );
        assert_eq!(
            words(&p, &store, p.position(24)),
            [
                "queue/ahead",
                "count/2",
                "count/10",
                "count/3",
                "queue/callers"
            ]
        );
        assert_eq!(
            words(&p, &store, p.wait(15)),
            ["queue/wait", "count/10", "count/5", "queue/minutes"]
        );
        assert_eq!(
            words(&p, &store, p.wait(40)),
            ["queue/wait", "count/4", "count/10", "queue/minutes"]
        );
        assert_eq!(
            words(&p, &store, p.wait(0)),
            ["queue/wait", "count/1", "queue/minutes"]
        );
        assert_eq!(
            words(&p, &store, p.position(500))[..3],
            ["queue/ahead", "queue/more-than", "count/9"]
        );
        // Without the prompts the announcement is empty, not an error.
        let none = QueuePrompts::new(&PromptStore::default());
        assert!(none.position(5).is_empty() && none.wait(3).is_empty());
    }
}
