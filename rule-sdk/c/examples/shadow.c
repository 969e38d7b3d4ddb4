/* Suspicious /etc/shadow Usage — the seed talk's first rule, in C.
 *
 * Any command line that names /etc/shadow (the file of password hashes) is
 * worth a look (ATT&CK T1003.008). The uuid differs from the Rust version's
 * so that both can load side by side. Build: rule-sdk/c/build.sh examples/shadow.c */
#include "dac_rule.h"

void exports_rule_metadata(rule_metadata_t *ret) {
    dac_metadata(ret, "Suspicious /etc/shadow Usage (C)", "9d2c4b8e-3f61-4e0a-b7d5-6a1e8f2c0b93", "1.0.0",
                 DAC_RULE_TYPES_SEVERITY_HIGH,
                 "A command line references /etc/shadow, which holds the password hashes.");
    dac_tag(ret, "attack.credential-access");
    dac_tag(ret, "attack.t1003.008");
    dac_prefilter(ret, "command_line", "/etc/shadow");
}

void dac_evaluate(const dac_event_t *event, rule_list_finding_t *ret) {
    dac_text_t command_line = dac_get_text(event, "command_line");
    if (dac_contains(command_line, "/etc/shadow")) {
        dac_add_finding(ret, "command line references /etc/shadow", "command_line", command_line);
    }
    dac_text_free(&command_line);
}
