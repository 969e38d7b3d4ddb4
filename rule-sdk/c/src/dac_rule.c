/* The kit's glue between the `rule` world's `evaluate` export (one batch of
 * events per call) and the rule's `dac_evaluate` (one event). build.sh
 * links it into every C rule; see include/dac_rule.h. */
#include "dac_rule.h"

/* The declared fields, in the order the host sends their values. */
static rule_list_string_t declared;

/* Asks the rule's own metadata once per instance: the host may start this
 * instance after asking another one for the metadata, and a fresh instance
 * (after a fault) starts with nothing. */
static const rule_list_string_t *declared_fields(void) {
    static bool known = false;
    if (!known) {
        rule_metadata_t metadata;
        exports_rule_metadata(&metadata);
        declared = metadata.fields;
        metadata.fields = (rule_list_string_t){NULL, 0};
        rule_metadata_free(&metadata);
        known = true;
    }
    return &declared;
}

void exports_rule_evaluate(rule_borrow_batch_t batch, rule_fields_t *fields, rule_list_list_finding_t *ret) {
    const rule_list_string_t *names = declared_fields();
    ret->len = fields->events;
    ret->ptr = NULL;
    if (ret->len > 0) {
        /* calloc: every event's list of findings starts empty. */
        ret->ptr = calloc(ret->len, sizeof *ret->ptr);
        if (ret->ptr == NULL) abort();
    }
    for (uint32_t i = 0; i < fields->events; i++) {
        dac_event_t event = {batch, i, names, NULL, &fields->text};
        /* A host that sent fewer values than it declared leaves the rest
         * absent, as the Rust kit does. */
        size_t start = (size_t)i * names->len;
        if (names->len > 0 && start + names->len <= fields->values.len) event.row = fields->values.ptr + start;
        dac_evaluate(&event, &ret->ptr[i]);
    }
    /* The bindings hand an export its arguments to own, and the host traps
     * a call that returns while the guest still holds the batch's borrow. */
    rule_fields_free(fields);
    dac_rule_types_batch_drop_borrow(batch);
}
