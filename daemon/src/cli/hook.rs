//! `medic hook dhcpcd|udhcpc|odhcp6c`: a DHCP client's script. Reads the client's arguments
//! and environment, normalises them ([`medic_io::hooks`]) and publishes the map as the
//! outputs of the service (`--service`, else `$MEDIC_SERVICE`); `--print` prints it instead.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use medic_io::hooks::{self, Client};

use super::{client, Failure, HookArgs, HookClient, EXIT_FAILED};

/// Runs the hook: whatever happens, it returns within a second (the daemon is asked with a
/// timeout; `--print` asks nothing).
pub fn run(hook: HookArgs) -> Result<(), Failure> {
    let client = match hook.client {
        HookClient::Dhcpcd => Client::Dhcpcd,
        HookClient::Udhcpc => Client::Udhcpc,
        HookClient::Odhcp6c => Client::Odhcp6c,
    };
    let service = match hook.service.clone() {
        Some(name) => Some(name),
        None => std::env::var("MEDIC_SERVICE").ok(),
    }
    .filter(|name| !name.is_empty());
    let Some(service) = service else {
        return Err(Failure::usage(format!(
            "hook {}: which service publishes this? Give --service NAME, or run the client \
             under medic, which sets MEDIC_SERVICE (dhcpcd clears its scripts' environment: \
             use --service in the script)",
            client.name()
        )));
    };
    let env = environment(std::env::vars_os());
    let normalised = hooks::normalise(client, &hook.args, &env)
        .map_err(|e| Failure::failed(format!("hook for {service}: {e}")))?;
    for error in &normalised.errors {
        eprintln!("medic: hook for {service}: {error}");
    }
    if hook.print {
        let text = serde_json::to_string_pretty(&normalised.to_value())
            .map_err(|e| Failure::failed(format!("cannot write the map as JSON: {e}")))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    } else if normalised.publish {
        client::publish_outputs(&hook.target, &service, normalised.to_value())?;
    }
    if normalised.errors.is_empty() {
        Ok(())
    } else {
        // Said on stderr above; the map (without the bad parts) is out.
        Err(Failure {
            status: EXIT_FAILED,
            message: String::new(),
        })
    }
}

/// The environment as text: a name or value that is not UTF-8 is taken with U+FFFD in place
/// of the bad bytes, so it reaches `raw` (and fails to parse, named, if the hook reads it).
fn environment(vars: impl Iterator<Item = (OsString, OsString)>) -> BTreeMap<String, String> {
    vars.map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    })
    .collect()
}
