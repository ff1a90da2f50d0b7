//! How the control plane's answers are shown: rules, their history, pauses, capture
//! requests and every agent's answer, as tables with times in the local zone; every
//! string an agent or an operator supplied is made printable on the way out.

use holmes_api::control::{
    CaptureDetailJson, CaptureJson, CapturesJson, PauseJson, PausesJson, RuleHistoryJson, RulesJson,
};

use crate::escape::printable;
use crate::table::Table;
use crate::terminal::Terminal;

/// A layer's selector as shown: `(all)` for the whole service.
fn selector(s: &str) -> &str {
    if s.is_empty() {
        "(all)"
    } else {
        s
    }
}

fn pause_line(term: &Terminal, what: &str, p: &Option<PauseJson>) {
    if let Some(p) = p {
        let reason = if p.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", printable(&p.reason))
        };
        println!(
            "{what} captures paused until {} by {}{reason}",
            term.when(&p.until),
            printable(&p.by)
        );
    }
}

pub(crate) fn print_rules(term: &Terminal, r: &RulesJson) {
    println!(
        "service {}: rules version {}",
        printable(&r.service),
        r.version
    );
    pause_line(term, "service", &r.pause);
    pause_line(term, "fleet", &r.fleet_pause);
    if r.rules.is_empty() {
        println!("no central rules: agents use their own");
        return;
    }
    let mut table = Table::new(
        term,
        &["SELECTOR", "METRIC", "RULE", "VERSION", "CHANGED", "BY"],
    )
    .right_aligned(&[3]);
    for c in &r.rules {
        let row = vec![
            table.text(selector(&c.selector)),
            table.text(&c.metric),
            table.text(&c.text),
            table.text(&c.version.to_string()),
            table.text(&term.when(&c.changed_at)),
            table.text(&c.by),
        ];
        table.row(row);
    }
    table.print();
}

pub(crate) fn print_history(term: &Terminal, h: &RuleHistoryJson) {
    if h.changes.is_empty() {
        println!("no rule changes for {}", printable(&h.service));
        return;
    }
    let mut table = Table::new(
        term,
        &[
            "VERSION", "TIME", "BY", "SELECTOR", "METRIC", "CHANGE", "NOTE",
        ],
    )
    .right_aligned(&[0]);
    for c in &h.changes {
        let change = c.text.as_deref().unwrap_or("deleted (agents' own rule)");
        let row = vec![
            table.text(&c.version.to_string()),
            table.text(&term.when(&c.changed_at)),
            table.text(&c.by),
            table.text(selector(&c.selector)),
            table.text(&c.metric),
            table.text(change),
            table.text(&c.note),
        ];
        table.row(row);
    }
    table.print();
}

pub(crate) fn print_pauses(term: &Terminal, p: &PausesJson) {
    if p.pause.is_none() && p.fleet_pause.is_none() {
        println!("captures are not paused (rules version {})", p.version);
        return;
    }
    pause_line(term, "service", &p.pause);
    pause_line(term, "fleet", &p.fleet_pause);
}

pub(crate) fn print_asked(asked: &CaptureJson) {
    println!(
        "asked {} instance(s) of {} for {} (request {}): {}",
        asked.instances.len(),
        printable(&asked.service),
        printable(&asked.kinds.join(", ")),
        printable(&asked.request_id),
        printable(&asked.instances.join(", "))
    );
    if !asked.pending_nodes.is_empty() {
        println!(
            "{} collector node(s) had not asked their agents yet: {}",
            asked.pending_nodes.len(),
            printable(&asked.pending_nodes.join(", "))
        );
    }
}

pub(crate) fn print_capture(term: &Terminal, d: &CaptureDetailJson) {
    let r = &d.request;
    println!(
        "capture {} of {} ({}), asked {} by {}: {} asked, {} captured, {} refused, {} not answered",
        printable(&r.request_id),
        printable(&r.service),
        printable(&r.kinds.join(", ")),
        term.when(&r.asked_at),
        printable(&r.by),
        r.asked,
        r.captured,
        r.refused,
        r.pending
    );
    let mut table = Table::new(term, &["INSTANCE", "CAPTURED", "EVENT", "REFUSED"]);
    for i in &d.instances {
        let captured = if i.answered_at.is_none() {
            "(no answer)".to_owned()
        } else if i.captured.is_empty() {
            "-".to_owned()
        } else {
            i.captured.join(",")
        };
        let refused: Vec<String> = i
            .refused
            .iter()
            .map(|r| {
                if r.detail.is_empty() {
                    format!("{} {}", r.kind, r.reason)
                } else {
                    format!("{} {} ({})", r.kind, r.reason, r.detail)
                }
            })
            .collect();
        let row = vec![
            table.text(&i.instance),
            table.text(&captured),
            table.text(i.event_id.as_deref().unwrap_or("-")),
            table.text(&refused.join("; ")),
        ];
        table.row(row);
    }
    table.print();
    if !d.profiles.is_empty() {
        println!("profiles:");
        let mut table = Table::new(term, &[]).indented(2);
        for p in &d.profiles {
            let row = vec![
                table.text(&term.when(&p.started)),
                table.text(&p.instance),
                table.text(&p.kind),
                table.text(p.error.as_deref().unwrap_or(&p.profile_id)),
            ];
            table.row(row);
        }
        table.print();
    }
}

pub(crate) fn print_captures(term: &Terminal, list: &CapturesJson) {
    if list.captures.is_empty() {
        println!(
            "no capture requests for {} from {} to {}",
            printable(&list.service),
            term.when(&list.since),
            term.when(&list.until)
        );
        return;
    }
    let mut table = Table::new(
        term,
        &[
            "ASKED",
            "REQUEST",
            "KINDS",
            "BY",
            "INSTANCES",
            "CAPTURED",
            "REFUSED",
            "PENDING",
        ],
    )
    .right_aligned(&[4, 5, 6, 7]);
    for c in &list.captures {
        let row = vec![
            table.text(&term.when(&c.asked_at)),
            table.text(&c.request_id),
            table.text(&c.kinds.join(",")),
            table.text(&c.by),
            table.text(&c.asked.to_string()),
            table.text(&c.captured.to_string()),
            table.text(&c.refused.to_string()),
            table.text(&c.pending.to_string()),
        ];
        table.row(row);
    }
    table.print();
}
