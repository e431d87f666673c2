//! Devices (DESIGN §12): which pieces of hardware a `device` service matches, and what the
//! kernel does when the set of present devices changes.
//!
//! State, not events: the adapter tells the kernel the whole set of present devices that any
//! device service could match ([`Input::Devices`](crate::Input::Devices)), after coldplug, after
//! each uevent that changes it and after a re-walk of sysfs (a lost or overflowed event
//! stream). The kernel matches each device service against that set; a set equal to the last
//! one changes nothing, so a re-walk that finds what the kernel already knew is a no-op.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Kind;
use crate::kernel::Kernel;
use crate::outputs::{Outputs, Value};
use crate::protocol::{Effect, ServiceId};

/// `device = { subsystem, name, devtype, driver, attrs }`: what a device service matches.
/// Every key given must match; an empty matcher matches nothing (the config refuses it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMatch {
    /// The uevent `SUBSYSTEM` (`tty`, `block`, `net`, `usb`), exactly.
    pub subsystem: Option<String>,
    /// A glob (`*`, `?`) on the kernel's name of the device, the last part of its devpath
    /// (`ttyUSB*`, `loop?`).
    pub name: Option<String>,
    /// The uevent `DEVTYPE` (`disk`, `partition`, `usb_device`), exactly.
    pub devtype: Option<String>,
    /// The driver bound to the device or, for a class device that has none of its own (a
    /// `ttyUSB0` under the `option` driver's port), to its nearest ancestor that has one.
    pub driver: Option<String>,
    /// Sysfs attributes, each read from the device or, if it has no such file, from its
    /// nearest ancestor that has (`idVendor` of the USB device above a tty), compared exactly
    /// after trailing white space is removed.
    pub attrs: BTreeMap<String, String>,
}

impl DeviceMatch {
    /// Whether `device` is one this matcher names.
    pub fn matches(&self, device: &Device) -> bool {
        let exact = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        exact(&self.subsystem, &Some(device.subsystem.clone()))
            && self.name.as_deref().is_none_or(|g| glob(g, &device.name))
            && exact(&self.devtype, &device.devtype)
            && exact(&self.driver, &device.driver)
            && self
                .attrs
                .iter()
                .all(|(k, v)| device.attrs.get(k).is_some_and(|have| have == v))
    }

    /// Whether nothing is asked for (matches nothing; a config error).
    pub fn is_empty(&self) -> bool {
        self.subsystem.is_none()
            && self.name.is_none()
            && self.devtype.is_none()
            && self.driver.is_none()
            && self.attrs.is_empty()
    }

    /// `subsystem=tty name=ttyUSB* idVendor=12d1`, for `medic check` and messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (key, value) in [
            ("subsystem", &self.subsystem),
            ("name", &self.name),
            ("devtype", &self.devtype),
            ("driver", &self.driver),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={v}"));
            }
        }
        for (k, v) in &self.attrs {
            parts.push(format!("{k}={v}"));
        }
        parts.join(" ")
    }
}

/// One present device, as the adapter read it from its uevent (and sysfs, for `attrs` and an
/// ancestor's driver).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    /// The sysfs path below `/sys`, `/devices/…/ttyUSB0/tty/ttyUSB0`: names the device.
    pub devpath: String,
    /// `SUBSYSTEM`.
    pub subsystem: String,
    /// The kernel's name: the devpath's last part (`ttyUSB0`).
    pub name: String,
    /// The device node, `/dev/` + `DEVNAME`, when it has one.
    pub devname: Option<String>,
    /// `DEVTYPE`, when it has one.
    pub devtype: Option<String>,
    /// Its driver or its nearest ancestor's (see [`DeviceMatch::driver`]).
    pub driver: Option<String>,
    /// The attributes some matcher asks about, as found on it or an ancestor.
    pub attrs: BTreeMap<String, String>,
}

/// `*` (any run, also empty) and `?` (any one character); everything else literal. Iterative,
/// with one backtrack point: linear in practice, never exponential.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What a device service publishes of the device it matches.
fn device_outputs(d: &Device) -> Outputs {
    let mut outputs = Outputs::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            outputs.insert(key.to_string(), Value::String(v.clone()));
        }
    };
    put("devname", &d.devname);
    put("devpath", &Some(d.devpath.clone()));
    put("subsystem", &Some(d.subsystem.clone()));
    put("driver", &d.driver);
    outputs
}

impl Kernel {
    /// [`crate::Input::Devices`]: the whole set of present devices. Each device service whose
    /// match changed (appeared, vanished, or another device now) is re-derived.
    pub(crate) fn on_devices(&mut self, mut devices: Vec<Device>, out: &mut Vec<Effect>) {
        devices.sort();
        devices.dedup_by(|a, b| a.devpath == b.devpath);
        self.devices = devices;
        self.rematch_devices(out);
    }

    /// Matches every device service against the known devices; marks those whose match
    /// changed, and publishes the matched device's facts as their outputs (DESIGN §9:
    /// `devname`, `devpath`, `subsystem`, `driver`; none while nothing matches). Also after a
    /// config replacement (a matcher may have changed).
    pub(crate) fn rematch_devices(&mut self, out: &mut Vec<Effect>) {
        let mut matched = BTreeMap::new();
        for &id in &self.device_services {
            if let Kind::Device { matcher } = &self.slots[id.index()].config.kind {
                if let Some(d) = self.devices.iter().find(|d| matcher.matches(d)) {
                    matched.insert(id, d.clone());
                }
            }
        }
        let changed: Vec<ServiceId> = self
            .device_services
            .iter()
            .copied()
            .filter(|id| matched.get(id) != self.device_matches.get(id))
            .collect();
        self.device_matches = matched;
        for id in changed {
            self.mark(id);
            let outputs = self
                .device_matches
                .get(&id)
                .map(device_outputs)
                .unwrap_or_default();
            let name = self.slots[id.index()].config.name.clone();
            self.on_set_outputs(&name, outputs, out);
        }
    }

    /// The device a device service matches now (the first by devpath), if any.
    pub fn device(&self, id: ServiceId) -> Option<&Device> {
        self.device_matches.get(&id)
    }

    /// Every present device the adapter told of.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob("ttyUSB*", "ttyUSB0"));
        assert!(glob("ttyUSB*", "ttyUSB"));
        assert!(!glob("ttyUSB*", "ttyACM0"));
        assert!(glob("loop?", "loop7"));
        assert!(!glob("loop?", "loop17"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("sd*1", "sda1"));
        assert!(!glob("", "x"));
        // A leading star, a star that must give back what it took, a literal `*` in the text.
        assert!(glob("*USB*", "ttyUSB0"));
        assert!(!glob("a*ab", "ab"));
        assert!(glob("a*ab", "aab"));
        assert!(glob("*?", "a*"));
        assert!(glob("eth*", "eth*"));
        // A pattern that is exponential for naive backtracking stays fast.
        let text = "a".repeat(200);
        assert!(!glob(&format!("{}b", "*a".repeat(50)), &text));
    }

    fn modem() -> Device {
        Device {
            devpath: "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0".into(),
            subsystem: "tty".into(),
            name: "ttyUSB0".into(),
            devname: Some("/dev/ttyUSB0".into()),
            devtype: None,
            driver: Some("option".into()),
            attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
        }
    }

    #[test]
    fn every_key_given_must_match() {
        let mut m = DeviceMatch {
            subsystem: Some("tty".into()),
            name: Some("ttyUSB*".into()),
            attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
            ..DeviceMatch::default()
        };
        assert!(m.matches(&modem()));
        m.driver = Some("option".into());
        assert!(m.matches(&modem()));
        m.devtype = Some("disk".into());
        assert!(!m.matches(&modem()), "no DEVTYPE on a tty");
        m.devtype = None;
        m.attrs.insert("idProduct".into(), "1506".into());
        assert!(!m.matches(&modem()), "an attribute the device lacks");
        m.attrs.remove("idProduct");
        m.subsystem = Some("block".into());
        assert!(!m.matches(&modem()));
        assert_eq!(
            DeviceMatch {
                subsystem: Some("tty".into()),
                name: Some("ttyUSB*".into()),
                attrs: [("idVendor".to_string(), "12d1".to_string())].into(),
                ..DeviceMatch::default()
            }
            .describe(),
            "subsystem=tty name=ttyUSB* idVendor=12d1"
        );
    }
}
