/* Downloaded file made executable and run — an ordered sequence, in C.
 *
 * A file fetched with curl or wget, given execute permission with chmod and
 * then run, all on one host within ten minutes, is how a dropper usually
 * lands (ATT&CK T1105, then T1222.002 and T1204.002). No single event is
 * suspicious; the rule remembers the first two steps in the host's keyed
 * state, which is scoped by the event's hostname and timed by its `ts`, so
 * the steps of different hosts never mix and replays give the same alerts
 * as live streams. Build: rule-sdk/c/build.sh examples/sequence.c */
#include "dac_rule.h"

/* How long after the download the chmod and the run may come. */
#define WINDOW_MS INT64_C(600000)

void exports_rule_metadata(rule_metadata_t *ret) {
    dac_metadata(ret, "Downloaded file made executable and run", "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a01", "1.0.0",
                 DAC_RULE_TYPES_SEVERITY_HIGH,
                 "A file downloaded with curl or wget was made executable with chmod and run, on one host "
                 "within ten minutes of the download.");
    /* No prefilter: the run of the file is an event like any other, so the
     * rule must see every event. These three are read on each of them. */
    dac_field(ret, "binary");
    dac_field(ret, "arguments");
    dac_field(ret, "path");
}

/* The text after the last '/': a file is known by its name alone, because
 * the download may name it relatively (`-o run.sh`) and the run by its
 * full path (`/home/ci/run.sh`). */
static dac_text_t base_name(dac_text_t path) {
    size_t start = path.len;
    while (start > 0 && path.ptr[start - 1] != '/') start--;
    return (dac_text_t){path.ptr + start, path.len - start, false};
}

static bool starts_with(dac_text_t text, const char *prefix) {
    size_t n = strlen(prefix);
    return text.len >= n && memcmp(text.ptr, prefix, n) == 0;
}

/* The event's time in ms since the epoch: the `ts` the host also times the
 * state by (a number or a date). False without one: the windows below are
 * computed from it and cannot be guessed. */
static bool event_time(const dac_event_t *event, int64_t *ts) {
    dac_rule_types_value_t value;
    if (!dac_get(event, "ts", &value)) return false;
    bool known = true;
    switch (value.tag) {
    case DAC_RULE_TYPES_VALUE_INTEGER: *ts = value.val.integer; break;
    case DAC_RULE_TYPES_VALUE_DATETIME: *ts = value.val.datetime; break;
    case DAC_RULE_TYPES_VALUE_FLOAT:
        /* Only floats an int64 holds; anything else is no time at all. */
        known = value.val.float_ >= -9.2e18 && value.val.float_ <= 9.2e18;
        if (known) *ts = (int64_t)value.val.float_;
        break;
    default: known = false; break;
    }
    dac_rule_types_value_free(&value);
    return known;
}

/* Step 1: remember that `file` was downloaded at `ts`, for the window. */
static void downloaded(const dac_event_t *event, dac_text_t file, int64_t ts) {
    dac_text_t name = base_name(file);
    if (name.len == 0) return; /* `-o dir/` names no file */
    char *key = dac_concat("downloaded:", name);
    char value[DAC_I64_CHARS];
    /* At the state quota the host refuses (and counts) the write; the
     * sequence is then lost, which is all a bounded rule can do. */
    (void)dac_state_set(event, key, dac_format_i64(ts, value), (uint64_t)WINDOW_MS);
    free(key);
}

/* The files a curl or wget command writes: the word after `-o`, `--output`
 * or a short-option group ending in `o` (`-sSfo FILE`) for curl, after
 * `-O` or `--output-document` for wget, or the value of `--output=FILE` /
 * `--output-document=FILE`. Each tool's letters only: wget's `-o` is its
 * log file, curl's `-O` takes no value. */
static void record_download(const dac_event_t *event, bool curl, dac_text_t arguments, int64_t ts) {
    const char *long_option = curl ? "--output" : "--output-document";
    const char *long_value = curl ? "--output=" : "--output-document=";
    dac_text_t rest = arguments, word;
    bool output_next = false;
    while (dac_next_word(&rest, &word)) {
        if (output_next) {
            /* curl takes one -o per URL: every one names a download. */
            downloaded(event, word, ts);
            output_next = false;
        } else if (dac_equals(word, long_option)) {
            output_next = true;
        } else if (starts_with(word, long_value)) {
            size_t n = strlen(long_value);
            downloaded(event, (dac_text_t){word.ptr + n, word.len - n, false}, ts);
        } else if (curl) {
            output_next = word.len >= 2 && word.ptr[0] == '-' && word.ptr[1] != '-' && word.ptr[word.len - 1] == 'o';
        } else {
            output_next = dac_equals(word, "-O");
        }
    }
}

/* Whether a chmod mode grants execute to anyone: symbolic with an `x`
 * (`+x`, `u+x`, `a+rx`), or octal with an odd digit (`755`, `0700`). */
static bool grants_execute(dac_text_t mode) {
    if (memchr(mode.ptr, 'x', mode.len) != NULL) return true;
    bool odd = false;
    for (size_t i = 0; i < mode.len; i++) {
        if (mode.ptr[i] < '0' || mode.ptr[i] > '7') return false;
        odd = odd || (mode.ptr[i] - '0') % 2 == 1;
    }
    return odd;
}

/* Step 2: a file downloaded less than the window ago became executable.
 * Its mark expires when the download's window does, so the run must still
 * come within ten minutes of the download, not of the chmod. */
static void record_chmod(const dac_event_t *event, dac_text_t arguments, int64_t ts) {
    dac_text_t rest = arguments, mode, file;
    if (!dac_next_word(&rest, &mode) || !grants_execute(mode)) return;
    while (dac_next_word(&rest, &file)) {
        dac_text_t name = base_name(file);
        if (name.len == 0) continue;
        char *key = dac_concat("downloaded:", name);
        dac_text_t value;
        int64_t download;
        if (dac_state_get(event, key, &value) && dac_parse_i64(value, &download) && download <= INT64_MAX - WINDOW_MS &&
            ts < download + WINDOW_MS) {
            char *mark = dac_concat("executable:", name);
            char since[DAC_I64_CHARS];
            /* Unsigned: the difference is positive, however far apart the two. */
            uint64_t ttl = (uint64_t)(download + WINDOW_MS) - (uint64_t)ts;
            (void)dac_state_set(event, mark, dac_format_i64(download, since), ttl);
            free(mark);
        }
        dac_text_free(&value);
        free(key);
    }
}

/* Step 3: a file marked executable runs. The marks go with the alert, so
 * that a sequence alerts once, not on every later run. */
static void record_exec(const dac_event_t *event, dac_text_t path, rule_list_finding_t *ret) {
    dac_text_t name = base_name(path);
    if (name.len == 0) return;
    char *mark = dac_concat("executable:", name);
    dac_text_t since;
    if (dac_state_get(event, mark, &since)) {
        static const char tail[] = " was downloaded, made executable and run within 10 minutes";
        char *message = malloc(path.len + sizeof tail);
        if (message == NULL) abort();
        memcpy(message, path.ptr, path.len);
        memcpy(message + path.len, tail, sizeof tail);
        dac_add_finding(ret, message, "path", path);
        free(message);
        char *key = dac_concat("downloaded:", name);
        dac_state_remove(event, key);
        dac_state_remove(event, mark);
        free(key);
    }
    dac_text_free(&since);
    free(mark);
}

void dac_evaluate(const dac_event_t *event, rule_list_finding_t *ret) {
    dac_text_t binary = dac_get_text(event, "binary");
    dac_text_t arguments = dac_get_text(event, "arguments");
    dac_text_t path = dac_get_text(event, "path");
    bool curl = dac_equals(binary, "curl");
    int64_t ts;
    if ((curl || dac_equals(binary, "wget")) && event_time(event, &ts)) {
        record_download(event, curl, arguments, ts);
    } else if (dac_equals(binary, "chmod") && event_time(event, &ts)) {
        record_chmod(event, arguments, ts);
    }
    if (path.ptr != NULL) record_exec(event, path, ret);
    dac_text_free(&binary);
    dac_text_free(&arguments);
    dac_text_free(&path);
}
