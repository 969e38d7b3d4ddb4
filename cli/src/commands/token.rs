//! `dac token`: a token for `dac serve` and the hash its tenants file
//! holds.

use crate::args::environment_help;

/// Makes an API token for `dac serve` and prints it with its SHA-256.
///
/// The token goes to the tenant (or the admin); only the hash goes in the
/// tenants file, as `token_sha256` (or `admin_token_sha256`).
#[derive(Debug, clap::Args)]
#[command(after_help = environment_help!())]
pub struct TokenArgs {}

pub fn run(_args: TokenArgs) -> Result<(), String> {
    let new = dac_serve::generate_token().map_err(|err| format!("reading random bytes: {err}"))?;
    println!("token:  {}", new.token);
    println!("sha256: {}", new.sha256_hex);
    Ok(())
}
