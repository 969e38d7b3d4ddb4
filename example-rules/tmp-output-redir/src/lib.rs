//! Output redirection to /tmp/ Directory — the seed's /tmp rule, as code.
//!
//! A shell command line that redirects output into `/tmp/` (`> /tmp/x`, and
//! therefore also `>> /tmp/x` and `2> /tmp/x`) is how a lot of hands-on
//! keyboard activity stages data: recon output, dumped credentials, or a
//! payload fetched for the next step, all in the one directory every user
//! can write to (ATT&CK T1074.001, Local Data Staging).
//!
//! The logic is exactly the seed's: a case-sensitive plain substring test for
//! `> /tmp/`. Redirections only appear in an exec event's command line when a
//! shell is handed the text (`sh -c '… > /tmp/x'`), since an interactive
//! shell performs them before it execs. Known gaps, kept for fidelity to the
//! seed: no space (`>/tmp/x`) and `/var/tmp/` or `/dev/shm/` targets.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Output redirection to /tmp/ Directory",
    uuid: "f825ad39-d4b1-41da-91ec-6438d8dc9ace",
    severity: Medium,
    description: "A command line redirects output into /tmp/ (\"> /tmp/\"), a common way to stage data or payloads.",
    tags: ["attack.collection", "attack.t1074.001"],
    prefilter: { fields: ["command_line"], literals: ["> /tmp/"] },
    evaluate: tmp_output_redirection,
}

fn tmp_output_redirection(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    contains(&command_line, "> /tmp/")
        .then(|| Finding::new("command line redirects output to /tmp/").matched("command_line", command_line))
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed talk's own test: its shadow event must not trip this rule.
    #[test]
    fn seed_talk_shadow_event_does_not_fire() {
        let event = Event::from_json(
            r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,
                "path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow",
                "command_line":"/usr/bin/sudo cat /etc/shadow"}"#,
        );
        assert!(DetectionRule::evaluate(&event).is_empty());
        assert_eq!(DetectionRule::metadata().uuid, "f825ad39-d4b1-41da-91ec-6438d8dc9ace");
        assert_eq!(DetectionRule::metadata().name, "Output redirection to /tmp/ Directory");
    }

    #[test]
    fn append_redirection_fires_with_the_command_line() {
        let event = Event::from_json(r#"{"command_line":"/bin/sh -c id >> /tmp/.o"}"#);
        let findings = DetectionRule::evaluate(&event);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].matched[0].path, "command_line");
        assert_eq!(findings[0].matched[0].value, "/bin/sh -c id >> /tmp/.o");
    }
}
