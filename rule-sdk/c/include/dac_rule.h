/* dac_rule.h — small helpers over the `wit-bindgen c` bindings of
 * wit/rule.wit (dac:rule@0.2.0, rule.h), so a C rule reads like the Rust one.
 *
 * A rule defines two functions: `exports_rule_metadata` (describes the
 * rule) and `dac_evaluate` (one event). The host hands events over in
 * batches; the kit's glue (src/dac_rule.c, linked by build.sh) calls
 * `dac_evaluate` once per event, in stream order, and drops the borrowed
 * batch itself.
 *
 * Memory: everything handed back to the host (metadata, findings) is copied
 * with malloc, and the generated post-return code frees it after the host
 * has read it. Text read from the event or from state is the rule's:
 * release it with dac_text_free (a no-op for the text of a declared field,
 * which is a view into the batch that lives until dac_evaluate returns). */
#ifndef DAC_RULE_H
#define DAC_RULE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rule.h"

/* A text value: read from the event or from state, or a piece of one
 * (dac_next_word). .ptr is NULL when the value is absent or not text;
 * present text, even empty, has a non-NULL .ptr. Not nul-terminated. */
typedef struct dac_text_t {
    const uint8_t *ptr;
    size_t len;
    /* Whether .ptr was malloc'd for the rule (dac_text_free frees it) or
     * points into memory the kit or another text owns. */
    bool owned;
} dac_text_t;

/* The event being evaluated: its position in the host's batch, and the
 * values of the declared fields that came with the batch. Read it with the
 * helpers below; `batch` and `index` are what the generated
 * dac_rule_types_method_batch_* functions take, for anything else. Valid
 * only until dac_evaluate returns. */
typedef struct dac_event_t {
    rule_borrow_batch_t batch;
    uint32_t index;
    /* The kit's: the declared paths, this event's values of them (NULL
     * when the host sent none: every declared field then reads as
     * absent) and the batch's text buffer their spans point into. */
    const rule_list_string_t *names;
    const dac_rule_types_field_t *row;
    const rule_list_u8_t *text;
} dac_event_t;

/* Defined by the rule: evaluates one event, appending findings to `ret`
 * (empty on entry) with dac_add_finding. */
void dac_evaluate(const dac_event_t *event, rule_list_finding_t *ret);

/* ---- Metadata ---------------------------------------------------------- */

/* Fills the required metadata fields; tags, prefilter and fields start empty. */
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

/* Declares a path the rule reads on (nearly) every event: its value then
 * comes with the batch, and reading it costs no call out of the sandbox.
 * Any other path stays readable, through a call to the host. At most 64;
 * declaring a path twice declares it once. */
static inline void dac_field(rule_metadata_t *ret, const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < ret->fields.len; i++) {
        if (ret->fields.ptr[i].len == n && memcmp(ret->fields.ptr[i].ptr, path, n) == 0) return;
    }
    dac_list_push(&ret->fields, path);
}

/* Declares that the rule cannot fire unless `literal` occurs in `field`
 * (case-sensitively); call once per (field, literal) pair. A prefilter's
 * field is one the rule reads on every event it is called for, so it is
 * also declared (dac_field). */
static inline void dac_prefilter(rule_metadata_t *ret, const char *field, const char *literal) {
    ret->prefilter.is_some = true;
    dac_list_push(&ret->prefilter.val.fields, field);
    dac_list_push(&ret->prefilter.val.literals, literal);
    dac_field(ret, field);
}

/* ---- Reading the event ------------------------------------------------- */

/* The value of declared field `path` in this event (NULL when absent), or
 * NULL with *declared false when `path` was not declared. */
static inline const dac_rule_types_field_t *dac__declared(const dac_event_t *event, const char *path, bool *declared) {
    size_t n = strlen(path);
    for (size_t i = 0; i < event->names->len; i++) {
        const rule_string_t *name = &event->names->ptr[i];
        if (name->len == n && memcmp(name->ptr, path, n) == 0) {
            *declared = true;
            if (event->row == NULL || event->row[i].tag == DAC_RULE_TYPES_FIELD_ABSENT) return NULL;
            return &event->row[i];
        }
    }
    *declared = false;
    return NULL;
}

/* Text the rule owns, from a string the bindings allocated. An empty string
 * is allocated nowhere (its pointer is not NULL but not heap memory
 * either); a static "" keeps the "present text has a pointer" promise. */
static inline dac_text_t dac__owned_text(rule_string_t s) {
    if (s.len == 0) return (dac_text_t){(const uint8_t *)"", 0, false};
    return (dac_text_t){s.ptr, s.len, true};
}

/* The value at a dotted path (`command_line`, `argv.0`,
 * `process.parent.path`) through the host; false when absent. */
static inline bool dac__host_get(const dac_event_t *event, const char *path, dac_rule_types_value_t *ret) {
    rule_string_t key;
    rule_string_set(&key, path);
    return dac_rule_types_method_batch_get(event->batch, event->index, &key, ret);
}

/* A declared field's text, as a view into the batch; absent when it is
 * not text. */
static inline dac_text_t dac__field_text(const dac_event_t *event, const dac_rule_types_field_t *field) {
    if (field == NULL) return (dac_text_t){NULL, 0, false};
    if (field->tag == DAC_RULE_TYPES_FIELD_TEXT) {
        dac_rule_types_span_t span = field->val.text;
        /* A span outside the buffer would be the host's bug; reading it as
         * absent beats reading out of bounds. */
        if (span.start > event->text->len || span.len > event->text->len - span.start) {
            return (dac_text_t){NULL, 0, false};
        }
        if (span.len == 0) return (dac_text_t){(const uint8_t *)"", 0, false};
        return (dac_text_t){event->text->ptr + span.start, span.len, false};
    }
    if (field->val.value.tag == DAC_RULE_TYPES_VALUE_TEXT) {
        rule_string_t s = field->val.value.val.text;
        return (dac_text_t){s.len ? s.ptr : (const uint8_t *)"", s.len, false};
    }
    return (dac_text_t){NULL, 0, false};
}

/* The text at a dotted path. A declared field's text is a view into the
 * batch (no copy, no call to the host); other paths are read from the host
 * and copied. Either way, pass it to dac_text_free when done. */
static inline dac_text_t dac_get_text(const dac_event_t *event, const char *path) {
    bool declared;
    const dac_rule_types_field_t *field = dac__declared(event, path, &declared);
    if (declared) return dac__field_text(event, field);
    dac_rule_types_value_t value;
    if (!dac__host_get(event, path, &value)) return (dac_text_t){NULL, 0, false};
    if (value.tag == DAC_RULE_TYPES_VALUE_TEXT) return dac__owned_text(value.val.text); /* ownership moves */
    dac_rule_types_value_free(&value);
    return (dac_text_t){NULL, 0, false};
}

static inline void dac__string_copy(rule_string_t *s) {
    rule_string_t copy;
    rule_string_dup_n(&copy, (const char *)s->ptr, s->len);
    *s = copy;
}

/* Any value at a dotted path, copied into `ret` (free it with
 * dac_rule_types_value_free); false when absent. */
static inline bool dac_get(const dac_event_t *event, const char *path, dac_rule_types_value_t *ret) {
    bool declared;
    const dac_rule_types_field_t *field = dac__declared(event, path, &declared);
    if (!declared) return dac__host_get(event, path, ret);
    if (field == NULL) return false;
    if (field->tag == DAC_RULE_TYPES_FIELD_TEXT) {
        dac_text_t text = dac__field_text(event, field);
        if (text.ptr == NULL) return false;
        ret->tag = DAC_RULE_TYPES_VALUE_TEXT;
        rule_string_dup_n(&ret->val.text, (const char *)text.ptr, text.len);
        return true;
    }
    /* The batch keeps its own copy until the call ends: the rule's must
     * not share its buffers. */
    *ret = field->val.value;
    switch (ret->tag) {
    case DAC_RULE_TYPES_VALUE_TEXT: dac__string_copy(&ret->val.text); break;
    case DAC_RULE_TYPES_VALUE_OBJECT_ID: dac__string_copy(&ret->val.object_id); break;
    case DAC_RULE_TYPES_VALUE_OTHER: dac__string_copy(&ret->val.other); break;
    case DAC_RULE_TYPES_VALUE_BINARY: {
        rule_list_u8_t copy = {NULL, ret->val.binary.len};
        if (copy.len > 0) {
            copy.ptr = malloc(copy.len);
            if (copy.ptr == NULL) abort();
            memcpy(copy.ptr, ret->val.binary.ptr, copy.len);
        }
        ret->val.binary = copy;
        break;
    }
    default: break;
    }
    return true;
}

/* The integer at a dotted path into *ret; false (and *ret untouched) when
 * absent or not an integer. */
static inline bool dac_get_integer(const dac_event_t *event, const char *path, int64_t *ret) {
    bool declared;
    const dac_rule_types_field_t *field = dac__declared(event, path, &declared);
    if (declared) {
        if (field == NULL || field->tag != DAC_RULE_TYPES_FIELD_VALUE ||
            field->val.value.tag != DAC_RULE_TYPES_VALUE_INTEGER) {
            return false;
        }
        *ret = field->val.value.val.integer;
        return true;
    }
    dac_rule_types_value_t value;
    if (!dac__host_get(event, path, &value)) return false;
    bool integer = value.tag == DAC_RULE_TYPES_VALUE_INTEGER;
    if (integer) *ret = value.val.integer;
    dac_rule_types_value_free(&value);
    return integer;
}

/* ---- Text -------------------------------------------------------------- */

static inline void dac_text_free(dac_text_t *text) {
    if (text->owned && text->len > 0) free((void *)text->ptr);
    *text = (dac_text_t){NULL, 0, false};
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

/* Whether `text` is exactly the nul-terminated `literal`; false for absent text. */
static inline bool dac_equals(dac_text_t text, const char *literal) {
    size_t n = strlen(literal);
    return text.ptr != NULL && text.len == n && memcmp(text.ptr, literal, n) == 0;
}

static inline bool dac__space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Splits off the next word of *rest (words are separated by ASCII
 * whitespace) into *word, a view into the same memory: it needs no
 * dac_text_free and lives as long as the text it came from. False when no
 * word is left. */
static inline bool dac_next_word(dac_text_t *rest, dac_text_t *word) {
    if (rest->ptr == NULL) return false;
    size_t i = 0;
    while (i < rest->len && dac__space(rest->ptr[i])) i++;
    size_t start = i;
    while (i < rest->len && !dac__space(rest->ptr[i])) i++;
    *word = (dac_text_t){rest->ptr + start, i - start, false};
    *rest = (dac_text_t){rest->ptr + i, rest->len - i, false};
    return i > start;
}

/* `prefix` followed by `text`, as a nul-terminated string malloc'd for the
 * rule (free it with free): the usual way to build a state key such as
 * "downloaded:" + a file name. */
static inline char *dac_concat(const char *prefix, dac_text_t text) {
    size_t n = strlen(prefix);
    char *s = malloc(n + text.len + 1);
    if (s == NULL) abort();
    memcpy(s, prefix, n);
    if (text.len > 0) memcpy(s + n, text.ptr, text.len);
    s[n + text.len] = '\0';
    return s;
}

/* Room for any int64_t in decimal: sign, 19 digits and the nul. */
#define DAC_I64_CHARS 21

/* Writes `n` in decimal into `buf`, nul-terminated, and returns `buf`: how
 * a rule keeps a time or a count in state. (snprintf would do, but links
 * wasi-libc's stdio into the rule: some 40 KB, and WASI file imports the
 * host only stubs.) */
static inline char *dac_format_i64(int64_t n, char buf[DAC_I64_CHARS]) {
    char digits[DAC_I64_CHARS];
    size_t k = 0;
    /* The magnitude as unsigned, so that INT64_MIN has one too. */
    uint64_t m = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;
    do {
        digits[k++] = (char)('0' + m % 10);
        m /= 10;
    } while (m > 0);
    size_t at = 0;
    if (n < 0) buf[at++] = '-';
    while (k > 0) buf[at++] = digits[--k];
    buf[at] = '\0';
    return buf;
}

/* The decimal integer `text` ("-" optional, then digits only) into *ret;
 * false, *ret untouched, for absent text, anything else or a number out
 * of range. */
static inline bool dac_parse_i64(dac_text_t text, int64_t *ret) {
    if (text.ptr == NULL) return false;
    size_t i = 0;
    bool negative = text.len > 0 && text.ptr[0] == '-';
    if (negative) i++;
    if (i == text.len) return false;
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t m = 0;
    for (; i < text.len; i++) {
        if (text.ptr[i] < '0' || text.ptr[i] > '9') return false;
        uint64_t digit = (uint64_t)(text.ptr[i] - '0');
        if (m > (limit - digit) / 10) return false;
        m = m * 10 + digit;
    }
    /* -(m - 1) - 1 reaches INT64_MIN without overflowing. */
    *ret = negative && m > 0 ? -(int64_t)(m - 1) - 1 : (int64_t)m;
    return true;
}

/* ---- Findings and logging ---------------------------------------------- */

/* Appends a finding with one matched field (path = `field`, value = `value`),
 * or none when `field` is NULL. */
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

/* ---- State ------------------------------------------------------------- */

/* Keyed state the host keeps for the rule (the `state` interface of
 * wit/rule.wit), on behalf of `event`:
 * - keys are scoped by the event's `hostname`: a rule reads only what it
 *   wrote for the same host (events without a hostname share one scope);
 * - time is the event's `ts` (ms since the epoch), not the clock: a value
 *   set with `ttl_ms` is read by that host's events whose ts is before
 *   ts + ttl_ms; a window of `window_ms` counts what falls in
 *   (ts - window_ms, ts]. An event without a ts takes the latest time
 *   the host has seen;
 * - writes are seen by the rest of the batch at once and kept when the
 *   call returns; if the call faults (abort, trap, budget) none are kept;
 * - at the host's quota, a write that needs a new key or more bytes is
 *   refused: dac_state_set returns false, count and distinct answer as
 *   for a new, empty key. A key or value over the size limit is a fault.
 * Keys, values and members are nul-terminated strings, only read. */

/* The value under `key` into *value (the rule's: dac_text_free it), if
 * one is set and has not expired at the event's time; else false, and
 * *value reads as absent (.ptr NULL). */
static inline bool dac_state_get(const dac_event_t *event, const char *key, dac_text_t *value) {
    rule_string_t k, v;
    rule_string_set(&k, key);
    if (!dac_rule_state_get(event->index, &k, &v)) {
        *value = (dac_text_t){NULL, 0, false};
        return false;
    }
    *value = dac__owned_text(v);
    return true;
}

/* Sets `key` to `value` until `ttl_ms` after the event's time, replacing
 * any value and its time to live. False when refused at the quota. */
static inline bool dac_state_set(const dac_event_t *event, const char *key, const char *value, uint64_t ttl_ms) {
    rule_string_t k, v;
    rule_string_set(&k, key);
    rule_string_set(&v, value);
    return dac_rule_state_set(event->index, &k, &v, ttl_ms);
}

/* Removes the value under `key`, if any. */
static inline void dac_state_remove(const dac_event_t *event, const char *key) {
    rule_string_t k;
    rule_string_set(&k, key);
    dac_rule_state_remove(event->index, &k);
}

/* Records one occurrence of `key` at the event's time; returns how many
 * fall in the `window_ms` up to it, this one included (so at least 1). */
static inline uint32_t dac_state_count(const dac_event_t *event, const char *key, uint64_t window_ms) {
    rule_string_t k;
    rule_string_set(&k, key);
    return dac_rule_state_count(event->index, &k, window_ms);
}

/* Records `member` in the set `key` at the event's time; returns how many
 * distinct members the set holds in the `window_ms` up to it, this one
 * included. */
static inline uint32_t dac_state_distinct(const dac_event_t *event, const char *key, const char *member,
                                          uint64_t window_ms) {
    rule_string_t k, m;
    rule_string_set(&k, key);
    rule_string_set(&m, member);
    return dac_rule_state_distinct(event->index, &k, &m, window_ms);
}

#endif
