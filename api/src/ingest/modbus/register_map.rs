//! Register maps: how to turn a device's holding registers into a sample.
//! Maps are data (TOML), not code: the built-in ones ship in
//! `api/register-maps/`, and more are loaded from `modbus.register_maps_dir`
//! at start-up, so a new device family needs no rebuild.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::telemetry::input::{MEASUREMENTS, SampleInput};

/// Register maps compiled into the binary.
const BUILTIN: [&str; 2] = [
    include_str!("../../../register-maps/sunspec-802.toml"),
    include_str!("../../../register-maps/flat-basic.toml"),
];

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    U16,
    I16,
    /// Two registers, high word first.
    U32,
    /// Two registers, high word first.
    I32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub start: u16,
    pub count: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// A `SampleInput` field name, e.g. `socPct`.
    pub target: String,
    pub address: u16,
    pub kind: Kind,
    /// SunSpec-style scale factor register (signed; value × 10^sf).
    pub scale_factor: Option<u16>,
    /// Fixed multiplier, applied after the scale factor.
    pub scale: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    pub name: String,
    pub description: String,
    /// Holding-register ranges read on each poll.
    pub blocks: Vec<Block>,
    pub fields: Vec<Field>,
}

impl RegisterMap {
    /// Parses and checks a map: known targets, every register it needs
    /// inside a block, blocks within Modbus's 125-register read limit.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let map: RegisterMap = toml::from_str(text)?;
        anyhow::ensure!(!map.blocks.is_empty(), "map '{}' reads no block", map.name);
        for b in &map.blocks {
            anyhow::ensure!(
                (1..=125).contains(&b.count) && b.start.checked_add(b.count - 1).is_some(),
                "map '{}': a block must read 1 to 125 registers within the address space",
                map.name
            );
        }
        let covered = |addr: u16| {
            map.blocks.iter().any(|b| {
                addr >= b.start && u32::from(addr) < u32::from(b.start) + u32::from(b.count)
            })
        };
        for f in &map.fields {
            anyhow::ensure!(
                MEASUREMENTS.contains(&f.target.as_str()),
                "map '{}': unknown target '{}'",
                map.name,
                f.target
            );
            let width = if matches!(f.kind, Kind::U32 | Kind::I32) {
                2
            } else {
                1
            };
            for a in f.address..f.address.saturating_add(width) {
                anyhow::ensure!(
                    covered(a),
                    "map '{}': register {a} of '{}' is not in a block",
                    map.name,
                    f.target
                );
            }
            if let Some(sf) = f.scale_factor {
                anyhow::ensure!(
                    covered(sf),
                    "map '{}': scale factor {sf} is not in a block",
                    map.name
                );
            }
        }
        Ok(map)
    }

    /// Decodes registers (address → value) into a sample's measurements.
    pub fn decode(&self, regs: &HashMap<u16, u16>, sample: &mut SampleInput) -> anyhow::Result<()> {
        let reg = |a: u16| {
            regs.get(&a)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("register {a} was not read"))
        };
        for f in &self.fields {
            let raw = match f.kind {
                Kind::U16 => f64::from(reg(f.address)?),
                Kind::I16 => f64::from(reg(f.address)? as i16),
                Kind::U32 => {
                    f64::from((u32::from(reg(f.address)?) << 16) | u32::from(reg(f.address + 1)?))
                }
                Kind::I32 => f64::from(
                    ((u32::from(reg(f.address)?) << 16) | u32::from(reg(f.address + 1)?)) as i32,
                ),
            };
            let exponent = match f.scale_factor {
                Some(a) => i32::from(reg(a)? as i16),
                None => 0,
            };
            let value = times(scaled(raw, exponent), f.scale.unwrap_or(1.0));
            match f.target.as_str() {
                "voltageV" => sample.voltage_v = Some(value),
                "currentA" => sample.current_a = Some(value),
                "powerW" => sample.power_w = Some(value),
                "socPct" => sample.soc_pct = Some(value),
                "sohPct" => sample.soh_pct = Some(value),
                "tempMinC" => sample.temp_min_c = Some(value),
                "tempMaxC" => sample.temp_max_c = Some(value),
                "tempAvgC" => sample.temp_avg_c = Some(value),
                "energyKwh" => sample.energy_kwh = Some(value),
                "efficiencyPct" => sample.efficiency_pct = Some(value),
                "cycleCount" => sample.cycle_count = i32::try_from(value.round() as i64).ok(),
                "cellVoltageMinV" => sample.cell_voltage_min_v = Some(value),
                "cellVoltageMaxV" => sample.cell_voltage_max_v = Some(value),
                other => anyhow::bail!("unknown target {other}"),
            }
        }
        Ok(())
    }
}

/// The maps known to this server, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    maps: BTreeMap<String, RegisterMap>,
}

impl Registry {
    /// The built-in maps plus every `*.toml` in `dir` (which may override them).
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut maps = BTreeMap::new();
        for text in BUILTIN {
            let m = RegisterMap::parse(text)?;
            maps.insert(m.name.clone(), m);
        }
        if let Some(dir) = dir {
            for entry in std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("register maps in {}: {e}", dir.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let m = RegisterMap::parse(&std::fs::read_to_string(&path)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    tracing::info!(map = %m.name, file = %path.display(), "register map loaded");
                    maps.insert(m.name.clone(), m);
                }
            }
        }
        Ok(Self { maps })
    }

    pub fn get(&self, name: &str) -> Option<&RegisterMap> {
        self.maps.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &RegisterMap> {
        self.maps.values()
    }
}

/// `raw` × 10^`exponent`, as the decimal number a device means: a
/// negative exponent divides by an exact power of ten, which rounds to the
/// double nearest that number (931 with −1 is 93.1; multiplying by 0.1
/// gave 93.10000000000001).
fn scaled(raw: f64, exponent: i32) -> f64 {
    if exponent < 0 {
        raw / 10f64.powi(-exponent)
    } else {
        raw * 10f64.powi(exponent)
    }
}

/// `value` × `scale`, where a scale whose reciprocal is a whole number (a
/// map's 0.1 means "÷ 10") divides by that number instead, for the same
/// reason as [`scaled`].
fn times(value: f64, scale: f64) -> f64 {
    let divisor = (1.0 / scale).round();
    if divisor.abs() >= 1.0 && 1.0 / divisor == scale {
        value / divisor
    } else {
        value * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> SampleInput {
        serde_json::from_str(r#"{"battery":"B","ts":"2026-01-01T00:00:00Z"}"#).unwrap()
    }

    #[test]
    fn sunspec_scale_factors_and_wide_registers() {
        let reg = Registry::load(None).unwrap();
        let map = reg.get("sunspec-802").unwrap();
        let mut regs: HashMap<u16, u16> = (40000..40040).map(|a| (a, 0)).collect();
        regs.insert(40010, 765); // SoC 76.5 with sf -1
        regs.insert(40030, (-1i16) as u16);
        regs.insert(40012, 1);
        regs.insert(40013, 2); // 65538 cycles
        regs.insert(40014, 5120); // 51.20 V with sf -2
        regs.insert(40032, (-2i16) as u16);
        regs.insert(40015, (-125i16) as u16); // -12.5 A with sf -1
        regs.insert(40033, (-1i16) as u16);
        regs.insert(40019, 301); // 30.1 °C
        regs.insert(40035, (-1i16) as u16);
        regs.insert(40017, 3412); // cells 3.412 / 3.189 V with sf -3
        regs.insert(40018, 3189);
        regs.insert(40036, (-3i16) as u16);
        let mut s = empty();
        map.decode(&regs, &mut s).unwrap();
        assert_eq!(s.soc_pct, Some(76.5));
        assert_eq!(s.cycle_count, Some(65538));
        // Exactly the decimal values the registers mean.
        assert_eq!(s.voltage_v, Some(51.2));
        assert_eq!(s.current_a, Some(-12.5));
        assert_eq!(s.temp_max_c, Some(30.1));
        assert_eq!(s.cell_voltage_max_v, Some(3.412));
        assert_eq!(s.cell_voltage_min_v, Some(3.189));
    }

    #[test]
    fn flat_map_scales_read_as_the_decimals_meant() {
        let reg = Registry::load(None).unwrap();
        let map = reg.get("flat-basic").unwrap();
        let regs: HashMap<u16, u16> = [5120, (-125i16) as u16, 765, 931, 245, 0, 412]
            .into_iter()
            .enumerate()
            .map(|(a, v)| (a as u16, v))
            .collect();
        let mut s = empty();
        map.decode(&regs, &mut s).unwrap();
        assert_eq!(s.voltage_v, Some(51.2));
        assert_eq!(s.current_a, Some(-12.5));
        assert_eq!(s.soc_pct, Some(76.5));
        assert_eq!(s.soh_pct, Some(93.1), "931 × 0.1");
        assert_eq!(s.temp_avg_c, Some(24.5));
        assert_eq!(s.cycle_count, Some(412));
        // A scale that is not a decimal fraction multiplies.
        assert_eq!(times(10.0, 0.3), 10.0 * 0.3);
        assert_eq!(times(7.0, 2.0), 14.0);
    }

    #[test]
    fn broken_maps_are_refused_with_a_reason() {
        let bad = "name='x'\ndescription=''\n[[blocks]]\nstart=0\ncount=2\n[[fields]]\ntarget='socPct'\naddress=5\nkind='u16'\n";
        assert!(
            RegisterMap::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("not in a block")
        );
        let bad = "name='x'\ndescription=''\n[[blocks]]\nstart=0\ncount=2\n[[fields]]\ntarget='soc'\naddress=0\nkind='u16'\n";
        assert!(
            RegisterMap::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("unknown target")
        );
        let bad = "name='x'\ndescription=''\n[[blocks]]\nstart=0\ncount=200\n[[fields]]\ntarget='socPct'\naddress=0\nkind='u16'\n";
        assert!(RegisterMap::parse(bad).is_err());
    }
}
