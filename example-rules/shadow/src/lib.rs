//! Suspicious /etc/shadow Usage — the seed talk's first rule, as code.
//!
//! Any command line that names `/etc/shadow` (the file of password hashes)
//! is worth a look: reading, copying or editing it outside of `passwd` and
//! friends is a classic credential-access step (ATT&CK T1003.008).

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Suspicious /etc/shadow Usage",
    uuid: "5e3566a3-9f19-4ac7-8710-ec5fb09260ed",
    severity: High,
    description: "A command line references /etc/shadow, which holds the password hashes.",
    tags: ["attack.credential-access", "attack.t1003.008"],
    prefilter: { fields: ["command_line"], literals: ["/etc/shadow"] },
    evaluate: shadow,
}

fn shadow(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    contains(&command_line, "/etc/shadow")
        .then(|| Finding::new("command line references /etc/shadow").matched("command_line", command_line))
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed talk's own test: its log yields exactly the shadow rule.
    #[test]
    fn seed_talk_test_log_fires() {
        let event = Event::from_json(
            r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,
                "path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow",
                "command_line":"/usr/bin/sudo cat /etc/shadow"}"#,
        );
        let findings = DetectionRule::evaluate(&event);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].matched[0].value, "/usr/bin/sudo cat /etc/shadow");
        assert_eq!(DetectionRule::metadata().uuid, "5e3566a3-9f19-4ac7-8710-ec5fb09260ed");
    }
}
