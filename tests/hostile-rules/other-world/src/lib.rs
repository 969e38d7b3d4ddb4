//! Hostile rule: a valid component of another world.
//!
//! To the host: a well-formed WebAssembly component that does not target
//! `dac:rule` — it exports only `run`. The host must refuse to load it,
//! with a message that names the file and says it is not a dac rule, and
//! must run nothing at all.

wit_bindgen::generate!({
    inline: r#"
        package evil:other@1.0.0;

        world other {
            export run: func() -> u32;
        }
    "#,
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
