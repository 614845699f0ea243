//! `hotline report`: a day's or a month's figures per seat, queue and unit (单位), the
//! national indicators against their targets, and the unit scores of the assessment rules
//! (`config/scoring.toml`, seed 004's items that calls measure). Weights and thresholds are
//! data in that file, not code, and each says where it comes from (`source`): a seed's line,
//! or `"operator"` for a target the plans name but do not set (no seed sets a figure for
//! 电话接通率, 满意率 …; four of them warn against chasing 满意率).
//!
//! 客户满意度 (seed 004 line 117): −1 per 不满意 on a matter, at most `max_per_matter` (3) for
//! one matter however often it is rated so (同一事项连续不满意最多扣3分), and none for a matter
//! the platform exempted after review (客观因素或依法不能办理者不扣分: `reports.exemptions`).
//! A matter is the call (its Call-ID), or the case a survey record names (`matter`) once
//! revisit calls rate cases.

use super::Record;
use super::figures::{Figures, SurveyFigures};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub unit_items: Vec<UnitItem>,
    #[serde(default)]
    pub indicators: Vec<Indicator>,
}

/// A unit's assessment item scored by deductions (e.g. 电话接通率 10 分: −1 per failed
/// probe, 0 above 10 a month; 客户满意度 20 分: −1 per 不满意).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitItem {
    pub name: String,
    pub points: f64,
    /// `dissatisfied` (不满意 ratings of the unit's seats) or `probe_failures` (answer-rate
    /// probes of the unit's line that failed all their attempts).
    pub measure: String,
    pub deduct_per: f64,
    /// More than this many in the period scores 0.
    #[serde(default)]
    pub zero_above: Option<u64>,
    /// `dissatisfied`: at most this many deductions for one matter.
    #[serde(default)]
    pub max_per_matter: Option<u64>,
    /// `dissatisfied`: matters in the exemptions file are not deducted.
    #[serde(default)]
    pub exemptions: bool,
    /// Where the item comes from: a seed reference (e.g. "004 line 117") or "operator".
    pub source: String,
}

/// A national indicator (电话接通率, 15 秒接通率, 呼损率, 满意率 …) and its target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Indicator {
    pub name: String,
    /// `answer_rate`, `answered_within_15s_rate`, `abandon_rate` or `satisfaction_rate`.
    pub measure: String,
    pub target: f64,
    #[serde(default)]
    pub lower_is_better: bool,
    /// Who set the target: "operator" (the plans name the indicator, not a figure), or a seed
    /// reference where a plan sets it.
    pub source: String,
}

/// The matters exempted from the satisfaction deduction (`reports.exemptions`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exemptions {
    #[serde(default)]
    pub exempt: Vec<Exemption>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exemption {
    /// The matter: a call's Call-ID, or a case id.
    pub matter: String,
    /// The objective cause or the law that stops it being handled.
    pub reason: String,
    /// Who reviewed the unit's evidence on the platform.
    pub reviewed_by: String,
}

impl Exemptions {
    fn has(&self, matter: &str) -> bool {
        self.exempt.iter().any(|e| e.matter == matter)
    }
}

/// Reads the exemptions file; a missing file exempts nothing.
pub fn load_exemptions(path: &std::path::Path) -> Result<Exemptions, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Exemptions::default()),
        Err(e) => {
            return Err(ReportError::Rules {
                path: path.to_path_buf(),
                why: e.to_string(),
            });
        }
    };
    toml::from_str(&text).map_err(|e| ReportError::Rules {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitFigures {
    pub seats: u64,
    pub offered: u64,
    pub answered: u64,
    pub answer_rate: f64,
    pub survey: SurveyFigures,
    /// Answer-rate probe rounds of the unit's lines, and those nobody answered.
    pub probe_rounds: u64,
    pub probe_failures: u64,
    /// Item name → points, or `None` where the period has no data for it.
    pub scores: BTreeMap<String, Option<f64>>,
    /// 不满意 ratings that were deducted: after the per-matter cap and the exemptions.
    pub dissatisfied_deducted: u64,
    /// Matters whose 不满意 the platform exempted.
    pub exempted_matters: u64,
    /// Of the ratings, those given in revisit calls (回访) rather than in the call.
    pub revisit_ratings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndicatorValue {
    pub name: String,
    pub value: Option<f64>,
    pub target: f64,
    pub source: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub period: String,
    pub figures: Figures,
    pub units: BTreeMap<String, UnitFigures>,
    pub indicators: Vec<IndicatorValue>,
    /// Each unit item and where its rule comes from.
    pub item_sources: Vec<(String, String)>,
}

/// Builds the report of `period` from its records; `unit_of` maps a seat id to its unit.
pub fn build(
    period: &str,
    records: &[Record],
    unit_of: &BTreeMap<String, String>,
    rules: &Rules,
    exemptions: &Exemptions,
) -> Report {
    let mut figures = Figures {
        day: period.to_string(),
        whole_period: true,
        ..Default::default()
    };
    for r in records {
        figures.apply(r);
    }
    let mut units: BTreeMap<String, UnitFigures> = BTreeMap::new();
    for unit in unit_of.values() {
        units.entry(unit.clone()).or_default();
    }
    for (seat, unit) in unit_of {
        let u = units.entry(unit.clone()).or_default();
        u.seats += 1;
        if let Some(s) = figures.seats.get(seat) {
            u.offered += s.offered;
            u.answered += s.answered;
            u.survey.satisfied += s.survey.satisfied;
            u.survey.basically_satisfied += s.survey.basically_satisfied;
            u.survey.dissatisfied += s.survey.dissatisfied;
            u.survey.no_answer += s.survey.no_answer;
        }
    }
    // Revisit ratings (回访) count for the case's handling unit, next to the in-call survey.
    for (unit, r) in &figures.revisits {
        let u = units.entry(unit.clone()).or_default();
        u.survey.satisfied += r.satisfied;
        u.survey.basically_satisfied += r.basically_satisfied;
        u.survey.dissatisfied += r.dissatisfied;
        u.survey.no_answer += r.no_answer;
        u.revisit_ratings += r.satisfied + r.basically_satisfied + r.dissatisfied;
    }
    for t in figures.targets.values() {
        if t.probe_rounds > 0 {
            let u = units
                .entry(if t.unit.is_empty() {
                    t.name.clone()
                } else {
                    t.unit.clone()
                })
                .or_default();
            u.probe_rounds += t.probe_rounds;
            u.probe_failures += t.probe_failures;
        }
    }
    // 不满意 per unit and matter (the call, or the case a survey names).
    let mut per_matter: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let super::Event::Survey {
            rating: Some(3), ..
        } = &r.event
        {
            // A rating that names neither a case nor a call is a matter of its own.
            let matter = r
                .matter()
                .or(r.call_id.as_deref())
                .map_or_else(|| format!("record {i}"), str::to_string);
            let unit = match &r.event {
                super::Event::Survey { unit, .. } => unit.as_ref(),
                _ => None,
            };
            if let Some(unit) = r.seat.as_ref().and_then(|s| unit_of.get(s)).or(unit) {
                *per_matter.entry((unit.clone(), matter)).or_default() += 1;
            }
        }
    }
    for u in units.values_mut() {
        u.answer_rate = if u.offered == 0 {
            1.0
        } else {
            u.answered as f64 / u.offered as f64
        };
        let rated = u.survey.satisfied + u.survey.basically_satisfied + u.survey.dissatisfied;
        u.survey.satisfaction_rate = if rated == 0 {
            1.0
        } else {
            (u.survey.satisfied + u.survey.basically_satisfied) as f64 / rated as f64
        };
    }
    for (name, u) in units.iter_mut() {
        for item in &rules.unit_items {
            let count = match item.measure.as_str() {
                "dissatisfied" => {
                    let mut deducted = 0;
                    let mut exempted = 0;
                    for ((unit, matter), n) in &per_matter {
                        if unit != name {
                            continue;
                        }
                        if item.exemptions && exemptions.has(matter) {
                            exempted += 1;
                            continue;
                        }
                        deducted += item.max_per_matter.map_or(*n, |cap| (*n).min(cap));
                    }
                    u.dissatisfied_deducted = deducted;
                    u.exempted_matters = exempted;
                    Some(deducted)
                }
                "probe_failures" if u.probe_rounds > 0 => Some(u.probe_failures),
                _ => None, // a unit none of whose lines was probed
            };
            let score = count.map(|n| {
                if item.zero_above.is_some_and(|z| n > z) {
                    0.0
                } else {
                    (item.points - n as f64 * item.deduct_per).max(0.0)
                }
            });
            u.scores.insert(item.name.clone(), score);
        }
    }
    // National indicators over every queue.
    let (mut offered, mut answered, mut abandoned, mut short, mut within15) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut survey = SurveyFigures::default();
    let (seat_answered, seat_transferred) = figures
        .seats
        .values()
        .fold((0, 0), |(a, t), s| (a + s.answered, t + s.transferred));
    for q in figures.queues.values() {
        offered += q.offered;
        answered += q.answered;
        abandoned += q.abandoned;
        short += q.short_abandoned;
        within15 += q.answered_within_15s;
        survey.satisfied += q.survey.satisfied;
        survey.basically_satisfied += q.survey.basically_satisfied;
        survey.dissatisfied += q.survey.dissatisfied;
    }
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            None
        } else {
            Some(a as f64 / b as f64)
        }
    };
    let rated = survey.satisfied + survey.basically_satisfied + survey.dissatisfied;
    let indicators = rules
        .indicators
        .iter()
        .map(|i| {
            let value = match i.measure.as_str() {
                "answer_rate" => ratio(answered, offered),
                "answered_within_15s_rate" => {
                    ratio(within15, answered + abandoned - short.min(abandoned))
                }
                "abandon_rate" => ratio(abandoned, offered),
                "satisfaction_rate" => ratio(survey.satisfied + survey.basically_satisfied, rated),
                "resolved_at_once_rate" => ratio(
                    seat_answered.saturating_sub(seat_transferred),
                    seat_answered,
                ),
                _ => None,
            };
            let met = value.map(|v| {
                if i.lower_is_better {
                    v <= i.target
                } else {
                    v >= i.target
                }
            });
            IndicatorValue {
                name: i.name.clone(),
                value,
                target: i.target,
                source: i.source.clone(),
                met,
            }
        })
        .collect();
    Report {
        period: period.to_string(),
        figures,
        units,
        indicators,
        item_sources: rules
            .unit_items
            .iter()
            .map(|i| (i.name.clone(), i.source.clone()))
            .collect(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("rules {path}: {why}")]
    Rules {
        path: std::path::PathBuf,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub fn load_rules(path: &std::path::Path) -> Result<Rules, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::Rules {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let rules: Rules = toml::from_str(&text).map_err(|e| ReportError::Rules {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let bad = |why: String| {
        Err(ReportError::Rules {
            path: path.to_path_buf(),
            why,
        })
    };
    for (what, name, source) in rules
        .unit_items
        .iter()
        .map(|i| ("unit item", &i.name, &i.source))
        .chain(
            rules
                .indicators
                .iter()
                .map(|i| ("indicator", &i.name, &i.source)),
        )
    {
        if source.trim().is_empty() {
            return bad(format!(
                "{what} {name:?}: source must say who set it (\"operator\" or a seed reference)"
            ));
        }
    }
    for i in &rules.unit_items {
        if !["dissatisfied", "probe_failures"].contains(&i.measure.as_str()) {
            return bad(format!(
                "unit item {:?}: unknown measure {:?} (dissatisfied, probe_failures)",
                i.name, i.measure
            ));
        }
    }
    for i in &rules.indicators {
        if ![
            "answer_rate",
            "answered_within_15s_rate",
            "abandon_rate",
            "satisfaction_rate",
            "resolved_at_once_rate",
        ]
        .contains(&i.measure.as_str())
        {
            return bad(format!(
                "indicator {:?}: unknown measure {:?} (answer_rate, answered_within_15s_rate, abandon_rate, satisfaction_rate, resolved_at_once_rate)",
                i.name, i.measure
            ));
        }
    }
    Ok(rules)
}

/// The report of `period` over the stored records of `days`.
pub fn from_store(
    store: &std::path::Path,
    period: &str,
    days: &[chrono::NaiveDate],
    unit_of: &BTreeMap<String, String>,
    rules: &Rules,
    exemptions: &Exemptions,
) -> Result<Report, ReportError> {
    let mut records = Vec::new();
    for d in days {
        records.extend(super::store::read_day(store, &d.to_string())?);
    }
    Ok(build(period, &records, unit_of, rules, exemptions))
}

impl Report {
    /// Writes `report.txt` and the CSV files into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> Result<(), ReportError> {
        let w = |path: std::path::PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|source| ReportError::Write { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        w(dir.join("report.txt"), &self.text())?;
        for (name, text) in self.csv() {
            w(dir.join(name), &text)?;
        }
        Ok(())
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

impl Report {
    /// The human-readable tables.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "12345 hotline report {}", self.period);
        let _ = writeln!(o, "\nIndicators");
        for i in &self.indicators {
            let v = i.value.map(pct).unwrap_or_else(|| "no data".into());
            let met = match i.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "",
            };
            let _ = writeln!(
                o,
                "  {:<16} {:>8}  target {:>6} ({})  {met}",
                i.name,
                v,
                pct(i.target),
                i.source
            );
        }
        let _ = writeln!(o, "\nUnits (单位)");
        for (name, u) in &self.units {
            let scores: Vec<String> = u
                .scores
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.map(|p| format!("{p:.0}"))
                            .unwrap_or_else(|| "no data".into())
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "  {name}: seats {}, offered {}, answered {} ({}), 满意率 {} ({} of the ratings in revisit calls), 不满意 {} (deducted {}, exempted matters {}), probes {} (unanswered {}); {}",
                u.seats,
                u.offered,
                u.answered,
                pct(u.answer_rate),
                pct(u.survey.satisfaction_rate),
                u.revisit_ratings,
                u.survey.dissatisfied,
                u.dissatisfied_deducted,
                u.exempted_matters,
                u.probe_rounds,
                u.probe_failures,
                scores.join(", ")
            );
        }
        let _ = writeln!(o, "\nAssessment items (sources)");
        for (name, source) in &self.item_sources {
            let _ = writeln!(o, "  {name}: {source}");
        }
        let _ = writeln!(o, "\nSeats");
        for (id, s) in &self.figures.seats {
            let _ = writeln!(
                o,
                "  {id}: offered {}, answered {} ({}), missed {}, rejected {}, transferred {}, talk {:.0} s, 满意率 {}",
                s.offered,
                s.answered,
                pct(s.answer_rate),
                s.missed,
                s.rejected,
                s.transferred,
                s.talk_time_s,
                pct(s.survey.satisfaction_rate)
            );
        }
        let _ = writeln!(o, "\nTargets (sub-centres, lines, emergency centres)");
        for (number, t) in &self.figures.targets {
            let rate = if t.transfers_answered + t.transfers_failed == 0 {
                "—".to_string()
            } else {
                pct(t.transfer_answer_rate)
            };
            let _ = writeln!(
                o,
                "  {number} {}: transfers {}, answered {} ({rate}), failed {}, abandoned {}, ASA {:.1} s; probe rounds {}, unanswered {}",
                t.name,
                t.transfers,
                t.transfers_answered,
                t.transfers_failed,
                t.transfers_abandoned,
                t.transfer_asa_s,
                t.probe_rounds,
                t.probe_failures
            );
        }
        let _ = writeln!(o, "\nQueues");
        for (name, q) in &self.figures.queues {
            let _ = writeln!(
                o,
                "  {name}: offered {}, answered {}, abandoned {} (short {}), SL15 {}, ASA {:.1} s, AHT {:.1} s",
                q.offered,
                q.answered,
                q.abandoned,
                q.short_abandoned,
                pct(q.service_level_15s),
                q.asa_s,
                q.aht_s
            );
        }
        o
    }

    /// CSV files: name → contents.
    pub fn csv(&self) -> Vec<(&'static str, String)> {
        let mut seats = String::from(
            "period,seat,offered,answered,missed,rejected,failed,answer_rate,answer_time_s,talk_time_s,wrap_up_time_s,satisfied,basically_satisfied,dissatisfied,transferred\n",
        );
        for (id, s) in &self.figures.seats {
            let _ = writeln!(
                seats,
                "{},{id},{},{},{},{},{},{:.4},{:.1},{:.1},{:.1},{},{},{},{}",
                self.period,
                s.offered,
                s.answered,
                s.missed,
                s.rejected,
                s.failed,
                s.answer_rate,
                s.answer_time_s,
                s.talk_time_s,
                s.wrap_up_time_s,
                s.survey.satisfied,
                s.survey.basically_satisfied,
                s.survey.dissatisfied,
                s.transferred
            );
        }
        let mut queues = String::from(
            "period,queue,offered,answered,abandoned,short_abandoned,timed_out,no_agents,answered_within_15s,answered_within_30s,asa_s,aht_s,longest_wait_s\n",
        );
        for (name, q) in &self.figures.queues {
            let _ = writeln!(
                queues,
                "{},{name},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1}",
                self.period,
                q.offered,
                q.answered,
                q.abandoned,
                q.short_abandoned,
                q.timed_out,
                q.no_agents,
                q.answered_within_15s,
                q.answered_within_30s,
                q.asa_s,
                q.aht_s,
                q.longest_wait_s
            );
        }
        let mut units = String::from("period,unit,item,score\n");
        for (name, u) in &self.units {
            for (item, score) in &u.scores {
                let _ = writeln!(
                    units,
                    "{},{name},{item},{}",
                    self.period,
                    score.map(|s| format!("{s:.0}")).unwrap_or_default()
                );
            }
        }
        let mut targets = String::from(
            "period,number,name,kind,unit,transfers,answered,failed,abandoned,answer_rate,asa_s,probe_rounds,probe_attempts,probe_failures\n",
        );
        for (number, t) in &self.figures.targets {
            let _ = writeln!(
                targets,
                "{},{number},{},{},{},{},{},{},{},{:.4},{:.1},{},{},{}",
                self.period,
                t.name,
                t.kind,
                t.unit,
                t.transfers,
                t.transfers_answered,
                t.transfers_failed,
                t.transfers_abandoned,
                t.transfer_answer_rate,
                t.transfer_asa_s,
                t.probe_rounds,
                t.probe_attempts,
                t.probe_failures
            );
        }
        let mut ind = String::from("period,indicator,value,target,target_source,met\n");
        for i in &self.indicators {
            let _ = writeln!(
                ind,
                "{},{},{},{},{},{}",
                self.period,
                i.name,
                i.value.map(|v| format!("{v:.4}")).unwrap_or_default(),
                i.target,
                i.source,
                i.met.map(|m| m.to_string()).unwrap_or_default()
            );
        }
        vec![
            ("seats.csv", seats),
            ("queues.csv", queues),
            ("units.csv", units),
            ("targets.csv", targets),
            ("indicators.csv", ind),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_scores_and_indicators_follow_the_rules() {
        let rules: Rules = toml::from_str(
            r#"
            [[unit_items]]
            name = "客户满意度"
            points = 20
            measure = "dissatisfied"
            deduct_per = 1
            source = "004 line 117"
            [[unit_items]]
            name = "电话接通率"
            points = 10
            measure = "probe_failures"
            deduct_per = 1
            zero_above = 10
            source = "004 line 95"
            [[indicators]]
            name = "电话接通率"
            measure = "answer_rate"
            target = 0.9
            source = "operator"
            [[indicators]]
            name = "呼损率"
            measure = "abandon_rate"
            target = 0.05
            lower_is_better = true
            source = "operator"
            "#,
        )
        .unwrap();
        let at = "2026-11-23T10:00:00.000+08:00";
        let rec = |kind: &'static str, seat: Option<&str>, detail: serde_json::Value| {
            Record::from_parts(
                at.into(),
                kind,
                None,
                seat.map(Into::into),
                Some("general".into()),
                detail,
            )
            .expect("a known kind with its detail")
        };
        let mut records = vec![];
        for rating in [1, 3, 3, 2] {
            records.push(rec("queue_enter", None, serde_json::json!({})));
            records.push(rec(
                "offer",
                Some("1001"),
                serde_json::json!({ "outcome": "answered", "ring_s": 2.0 }),
            ));
            records.push(rec(
                "queue_exit",
                None,
                serde_json::json!({ "reason": "answered", "waited_s": 5.0 }),
            ));
            records.push(rec(
                "survey",
                Some("1001"),
                serde_json::json!({ "rating": rating }),
            ));
        }
        records.push(rec("queue_enter", None, serde_json::json!({})));
        records.push(rec(
            "queue_exit",
            None,
            serde_json::json!({ "reason": "abandoned", "waited_s": 30.0, "short": false }),
        ));
        let units = BTreeMap::from([
            ("1001".to_string(), "省司法厅".to_string()),
            ("1002".to_string(), "省司法厅".to_string()),
        ]);
        let r = build("2026-11", &records, &units, &rules, &Exemptions::default());
        let u = &r.units["省司法厅"];
        assert_eq!(
            (u.seats, u.offered, u.answered, u.survey.dissatisfied),
            (2, 4, 4, 2)
        );
        assert_eq!(u.scores["客户满意度"], Some(18.0), "20 − 2 不满意");
        assert_eq!(u.scores["电话接通率"], None, "no probe data");
        assert_eq!(
            (r.indicators[0].value, r.indicators[0].met),
            (Some(0.8), Some(false)),
            "4 of 5 answered"
        );
        assert_eq!(
            (r.indicators[1].value, r.indicators[1].met),
            (Some(0.2), Some(false))
        );
        assert!(r.text().contains("省司法厅"));
        assert!(
            r.text().contains("target  90.0% (operator)"),
            "{}",
            r.text()
        );
        assert!(
            r.csv()[4]
                .1
                .contains("2026-11,电话接通率,0.8000,0.9,operator,false")
        );
        assert!(r.csv()[2].1.contains("2026-11,省司法厅,客户满意度,18"));
    }

    /// Seed 004 line 117 on a scripted day, against the hand computation: −1 per 不满意, at
    /// most 3 for one matter, none for an exempted matter.
    #[test]
    fn satisfaction_deductions_are_capped_per_matter_and_exemptions_deduct_nothing() {
        let rules: Rules = toml::from_str(
            r#"
            [[unit_items]]
            name = "客户满意度"
            points = 20
            measure = "dissatisfied"
            deduct_per = 1
            max_per_matter = 3
            exemptions = true
            source = "004 line 117"
            "#,
        )
        .unwrap();
        let exemptions: Exemptions = toml::from_str(
            r#"
            [[exempt]]
            matter = "call-b"
            reason = "客观因素：暴雨停电，无法上门"
            reviewed_by = "平台审核员甲"
            [[exempt]]
            matter = "case-m"
            reason = "依法不能办理"
            reviewed_by = "平台审核员乙"
            "#,
        )
        .unwrap();
        let at = "2026-12-15T10:00:00.000+08:00";
        // (seat, call id, matter named by the survey, rating)
        let ratings = [
            ("1003", "call-a", None, 3),         // 1 (the call is the matter)
            ("1003", "rv-1", Some("case-k"), 3), // case K rated 不满意 five times:
            ("1003", "rv-2", Some("case-k"), 3), //   capped at 3
            ("1003", "rv-3", Some("case-k"), 3),
            ("1003", "rv-4", Some("case-k"), 3),
            ("1003", "rv-5", Some("case-k"), 3),
            ("1005", "rv-6", Some("case-l"), 3), // case L twice: 2
            ("1005", "rv-7", Some("case-l"), 3),
            ("1005", "call-b", None, 3),         // exempted: 0
            ("1003", "call-c", None, 1),         // 满意: 0
            ("1003", "call-e", None, 2),         // 基本满意: 0
            ("1003", "rv-8", Some("case-m"), 3), // case M four times, exempted: 0
            ("1003", "rv-9", Some("case-m"), 3),
            ("1003", "rv-10", Some("case-m"), 3),
            ("1003", "rv-11", Some("case-m"), 3),
            ("1001", "call-d", None, 3), // another unit: 1
        ];
        let records: Vec<Record> = ratings
            .iter()
            .map(|(seat, call, matter, rating)| {
                let mut detail = serde_json::json!({ "rating": rating });
                if let Some(m) = matter {
                    detail["matter"] = serde_json::json!(m);
                }
                Record::from_parts(
                    at.into(),
                    "survey",
                    Some((*call).into()),
                    Some((*seat).into()),
                    Some("general".into()),
                    detail,
                )
                .expect("a survey record")
            })
            .collect();
        let units = BTreeMap::from([
            ("1001".to_string(), "12345热线中心".to_string()),
            ("1003".to_string(), "省司法厅".to_string()),
            ("1005".to_string(), "省司法厅".to_string()),
        ]);
        let r = build("2026-12-15", &records, &units, &rules, &exemptions);
        let sft = &r.units["省司法厅"];
        // By hand: call-a 1 + case-k min(5, 3) + case-l 2 + call-b 0 + case-m 0 = 6; 20 − 6.
        assert_eq!(sft.survey.dissatisfied, 13, "every 不满意 is still counted");
        assert_eq!((sft.dissatisfied_deducted, sft.exempted_matters), (6, 2));
        assert_eq!(sft.scores["客户满意度"], Some(14.0));
        assert_eq!(r.units["12345热线中心"].scores["客户满意度"], Some(19.0));
        let text = r.text();
        assert!(
            text.contains("不满意 13 (deducted 6, exempted matters 2)"),
            "{text}"
        );
        assert!(text.contains("客户满意度: 004 line 117"), "{text}");
    }
}
