/* dac_rule.h — small helpers over the `wit-bindgen c` bindings of
 * wit/rule.wit (rule.h), so a C rule reads like the Rust one.
 *
 * Memory: everything handed back to the host (metadata, findings) is copied
 * with malloc, and the generated post-return code frees it after the host
 * has read it. Text read from the event belongs to the rule: free it with
 * dac_text_free. Call dac_done(event) before `evaluate` returns. */
#ifndef DAC_RULE_H
#define DAC_RULE_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rule.h"

/* A text value read from the event; .ptr is NULL when the field is absent
 * or not text. Not nul-terminated. */
typedef rule_string_t dac_text_t;

/* Fills the required metadata fields; tags and prefilter start empty. */
static inline void dac_metadata(rule_metadata_t *ret, const char *name, const char *uuid, const char *version,
                                dac_rule_types_severity_t severity, const char *description) {
    memset(ret, 0, sizeof *ret);
    rule_string_dup(&ret->name, name);
    rule_string_dup(&ret->uuid, uuid);
    rule_string_dup(&ret->version, version);
    ret->severity = severity;
    rule_string_dup(&ret->description, description);
}

static inline void dac_list_push(rule_list_string_t *list, const char *s) {
    list->ptr = realloc(list->ptr, (list->len + 1) * sizeof *list->ptr);
    if (list->ptr == NULL) abort();
    rule_string_dup(&list->ptr[list->len++], s);
}

static inline void dac_tag(rule_metadata_t *ret, const char *tag) { dac_list_push(&ret->tags, tag); }

/* Declares that the rule cannot fire unless `literal` occurs in `field`
 * (case-sensitively); call once per (field, literal) pair. */
static inline void dac_prefilter(rule_metadata_t *ret, const char *field, const char *literal) {
    ret->prefilter.is_some = true;
    dac_list_push(&ret->prefilter.val.fields, field);
    dac_list_push(&ret->prefilter.val.literals, literal);
}

/* The text at a dotted path (`command_line`, `argv.0`, `process.parent.path`). */
static inline dac_text_t dac_get_text(rule_borrow_event_t event, const char *path) {
    rule_string_t key;
    rule_string_set(&key, path);
    dac_rule_types_value_t value;
    dac_text_t text = {NULL, 0};
    if (dac_rule_types_method_event_get(event, &key, &value)) {
        if (value.tag == DAC_RULE_TYPES_VALUE_TEXT) {
            text = value.val.text; /* ownership moves to the caller */
        } else {
            dac_rule_types_value_free(&value);
        }
    }
    return text;
}

static inline void dac_text_free(dac_text_t *text) {
    if (text->ptr != NULL) rule_string_free(text);
    text->ptr = NULL;
    text->len = 0;
}

/* Whether `text` contains the nul-terminated `needle`; false for absent text. */
static inline bool dac_contains(dac_text_t text, const char *needle) {
    size_t n = strlen(needle);
    if (text.ptr == NULL || n > text.len) return false;
    if (n == 0) return true;
    for (size_t i = 0; i + n <= text.len; i++) {
        if (text.ptr[i] == (uint8_t)needle[0] && memcmp(text.ptr + i, needle, n) == 0) return true;
    }
    return false;
}

/* Appends a finding with one matched field (path = `field`, value = `value`). */
static inline void dac_add_finding(rule_list_finding_t *ret, const char *message, const char *field, dac_text_t value) {
    ret->ptr = realloc(ret->ptr, (ret->len + 1) * sizeof *ret->ptr);
    if (ret->ptr == NULL) abort();
    rule_finding_t *finding = &ret->ptr[ret->len++];
    memset(finding, 0, sizeof *finding);
    rule_string_dup(&finding->message, message);
    if (field != NULL) {
        finding->matched.ptr = malloc(sizeof *finding->matched.ptr);
        if (finding->matched.ptr == NULL) abort();
        finding->matched.len = 1;
        rule_string_dup(&finding->matched.ptr[0].path, field);
        rule_string_dup_n(&finding->matched.ptr[0].value, (const char *)value.ptr, value.len);
    }
}

/* Logs a line through the host (rate-limited per rule). */
static inline void dac_log(dac_rule_host_level_t level, const char *message) {
    rule_string_t text;
    rule_string_set(&text, message);
    dac_rule_host_log(level, &text);
}

/* Ends an evaluation: drops the borrowed event. Required before returning. */
static inline void dac_done(rule_borrow_event_t event) { dac_rule_types_event_drop_borrow(event); }

#endif
