//! `examples/router.toml`'s DHCPv6-PD block: the radvd template renders, from the very map the
//! dhcpcd hook publishes for a delegated prefix, a config for the LAN's first /64.

use std::collections::BTreeMap;

use medic_io::hooks::{normalise, Client};
use medic_kernel::config::TemplateSource;
use medic_kernel::{Outputs, Value};

/// The hook's JSON as kernel outputs (strings, lists and maps: all the hook makes).
fn value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(value).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (k.clone(), value(v))).collect())
        }
        other => panic!("the hook publishes text, lists and maps only, not {other}"),
    }
}

#[test]
fn the_radvd_template_renders_the_lans_first_64_from_the_dhcpcd_hooks_map() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/router.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = medic_kernel::config::parse(&text, path).expect("the example is valid");
    let radvd = config
        .services
        .iter()
        .find(|s| s.name == "radvd")
        .expect("radvd in the example");
    let TemplateSource::Text(template) = &radvd.templates[0].source else {
        panic!("radvd's template is inline text");
    };
    // dhcpcd's BOUND6 with a delegated /56, as dhcpcd-run-hooks(8) documents it.
    let env: BTreeMap<String, String> = [
        ("reason", "BOUND6"),
        ("interface", "eth0"),
        ("new_dhcp6_ia_pd1_prefix1", "2001:db8:1200::"),
        ("new_dhcp6_ia_pd1_prefix1_length", "56"),
        ("new_dhcp6_ia_pd1_prefix1_pltime", "1800"),
        ("new_dhcp6_ia_pd1_prefix1_vltime", "3600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let hook = normalise(Client::Dhcpcd, &[], &env).expect("a good event");
    assert!(hook.publish && hook.errors.is_empty(), "{:?}", hook.errors);
    let dhcp6: Outputs = hook
        .map
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect();
    let outputs = BTreeMap::from([("dhcp6".to_string(), dhcp6)]);
    let env = medic_io::render::environment();
    let rendered = medic_io::render::render_text(&env, template, &outputs).expect("renders");
    assert!(
        rendered.contains("    prefix 2001:db8:1200:1::/64 { };\n"),
        "{rendered}"
    );
    assert!(
        rendered.contains("    RDNSS 2001:db8:1200:1::1 { };\n"),
        "{rendered}"
    );
    // Before the first lease: the render fails, naming what it waits for.
    let none = BTreeMap::new();
    let err = medic_io::render::render_text(&env, template, &none).unwrap_err();
    assert!(err.contains("dhcp6"), "{err}");
}
