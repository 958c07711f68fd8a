//! A realistic fleet, created through the hierarchy service (so it is
//! validated and audited like any other change): clients in three
//! countries, two sites each with real coordinates, zones, BMS units of the
//! three families, and batteries of varied chemistry, size and age.
//! Deterministic for a given seed, so tests and benchmarks can rely on it.

use chrono::{Days, NaiveDate, Utc};
use entities::battery;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::hierarchy::HierarchyService;
use crate::hierarchy::types::*;
use crate::ids::{self, Kind};

/// How big a fleet to create.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub clients: usize,
    pub sites_per_client: usize,
    pub zones_per_site: usize,
    pub bms_per_zone: usize,
    pub batteries_per_bms: usize,
    pub seed: u64,
}

impl FleetSpec {
    /// The `serve --demo` fleet: 3 clients, 6 sites, 12 zones, 12 BMS units,
    /// 204 batteries.
    pub fn demo() -> Self {
        Self {
            clients: 3,
            sites_per_client: 2,
            zones_per_site: 2,
            bms_per_zone: 1,
            batteries_per_bms: 17,
            seed: 7,
        }
    }

    pub fn battery_count(&self) -> usize {
        self.clients
            * self.sites_per_client
            * self.zones_per_site
            * self.bms_per_zone
            * self.batteries_per_bms
    }
}

struct ClientTemplate {
    name: &'static str,
    code: &'static str,
    industry: &'static str,
    country: &'static str,
    tz: &'static str,
    tier: ClientTier,
    sites: [(&'static str, f64, f64, &'static str); 2],
}

const CLIENTS: [ClientTemplate; 3] = [
    ClientTemplate {
        name: "Helios Storage",
        code: "HEL",
        industry: "Utility-scale storage",
        country: "FR",
        tz: "Europe/Paris",
        tier: ClientTier::Enterprise,
        sites: [
            (
                "Lyon Confluence",
                45.7415,
                4.8188,
                "12 quai Perrache, 69002 Lyon",
            ),
            (
                "Marseille Port",
                43.3128,
                5.3653,
                "Digue du Large, 13002 Marseille",
            ),
        ],
    },
    ClientTemplate {
        name: "NordGrid Logistics",
        code: "NGL",
        industry: "Logistics",
        country: "DE",
        tz: "Europe/Berlin",
        tier: ClientTier::Premium,
        sites: [
            (
                "Hamburg Hub",
                53.5461,
                9.9661,
                "Am Sandtorkai 1, 20457 Hamburg",
            ),
            (
                "Munich Depot",
                48.1374,
                11.5755,
                "Landsberger Str. 100, 80339 München",
            ),
        ],
    },
    ClientTemplate {
        name: "Iberia Telecom Towers",
        code: "ITT",
        industry: "Telecom",
        country: "ES",
        tz: "Europe/Madrid",
        tier: ClientTier::Standard,
        sites: [
            (
                "Madrid Norte",
                40.4637,
                -3.6890,
                "Calle de Orense 20, 28020 Madrid",
            ),
            (
                "Valencia Puerto",
                39.4502,
                -0.3234,
                "Av. del Port 300, 46024 Valencia",
            ),
        ],
    },
];

const ZONES: [&str; 4] = ["Hall A", "Hall B", "Container yard", "Rooftop"];

/// Creates the fleet as `who` and returns its batteries.
pub async fn create(
    service: &HierarchyService,
    who: &Principal,
    spec: &FleetSpec,
) -> ApiResult<Vec<battery::Model>> {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let today = Utc::now().date_naive();
    let mut batteries = Vec::with_capacity(spec.battery_count());
    let mut serial_no = 0;
    for c in 0..spec.clients {
        let tpl = &CLIENTS[c % CLIENTS.len()];
        let round = c / CLIENTS.len();
        let suffix = |s: &str| {
            if round == 0 {
                s.to_owned()
            } else {
                format!("{s} {}", round + 1)
            }
        };
        let client = service
            .create_client(
                who,
                CreateClientInput {
                    name: suffix(tpl.name),
                    industry: Some(tpl.industry.into()),
                    country: Some(tpl.country.into()),
                    time_zone: tpl.tz.into(),
                    tier: tpl.tier,
                },
            )
            .await?;
        for s in 0..spec.sites_per_client {
            let (site_name, lat, lon, address) = tpl.sites[s % 2];
            let site = service
                .create_site(
                    who,
                    CreateSiteInput {
                        client_id: ids::encode(Kind::Client, client.id),
                        name: if s < 2 {
                            site_name.to_owned()
                        } else {
                            format!("{site_name} {}", s / 2 + 1)
                        },
                        latitude: Some(lat + rng.random_range(-0.01..0.01)),
                        longitude: Some(lon + rng.random_range(-0.01..0.01)),
                        time_zone: None,
                        address: Some(address.into()),
                    },
                )
                .await?;
            for z in 0..spec.zones_per_site {
                let zone = service
                    .create_zone(
                        who,
                        CreateZoneInput {
                            site_id: ids::encode(Kind::Site, site.id),
                            name: ZONES
                                .get(z)
                                .map_or_else(|| format!("Zone {}", z + 1), |n| (*n).to_owned()),
                            description: None,
                        },
                    )
                    .await?;
                for b in 0..spec.bms_per_zone {
                    let (vendor, protocol, endpoint, map) = match rng.random_range(0..3) {
                        // The simulator pushes every unit's samples: none is polled.
                        0 => (BmsVendor::FoxBms, BmsProtocol::HttpPush, None, None),
                        1 => (
                            BmsVendor::LibreSolar,
                            BmsProtocol::Mqtt,
                            Some(format!(
                                "libre/{}/{}/{}",
                                tpl.code.to_lowercase(),
                                site.id,
                                zone.id
                            )),
                            None,
                        ),
                        _ => (BmsVendor::Generic, BmsProtocol::HttpPush, None, None),
                    };
                    let unit = service
                        .create_bms(
                            who,
                            CreateBmsInput {
                                zone_id: ids::encode(Kind::Zone, zone.id),
                                name: format!("{}-{}-BMS{}", tpl.code, zone.id, b + 1),
                                vendor,
                                protocol,
                                endpoint,
                                poll_interval_ms: 5000,
                                register_map: map,
                                capacity_kwh: Some(spec.batteries_per_bms as f64 * 12.0),
                            },
                        )
                        .await?;
                    for _ in 0..spec.batteries_per_bms {
                        serial_no += 1;
                        let input = battery_input(
                            &mut rng,
                            today,
                            ids::encode(Kind::Bms, unit.id),
                            tpl.code,
                            serial_no,
                        );
                        batteries.push(service.create_battery(who, input).await?);
                    }
                }
            }
        }
    }
    Ok(batteries)
}

fn battery_input(
    rng: &mut SmallRng,
    today: NaiveDate,
    bms_id: async_graphql::ID,
    code: &str,
    n: usize,
) -> CreateBatteryInput {
    let roll: f64 = rng.random();
    let (chemistry, cells, cell_v) = if roll < 0.6 {
        (Chemistry::Lfp, 16.0, 3.2)
    } else if roll < 0.95 {
        (Chemistry::Nmc, 14.0, 3.7)
    } else {
        (Chemistry::Lto, 23.0, 2.3)
    };
    let capacity_ah = [100.0, 150.0, 200.0, 280.0][rng.random_range(0..4)];
    let voltage_v: f64 = cells * cell_v;
    let age_days = rng.random_range(30..(8 * 365));
    CreateBatteryInput {
        bms_id,
        serial: format!("{code}-{n:05}"),
        chemistry,
        nominal_capacity_ah: capacity_ah,
        nominal_energy_kwh: Some((voltage_v * capacity_ah / 1000.0 * 100.0).round() / 100.0),
        nominal_voltage_v: (voltage_v * 10.0).round() / 10.0,
        install_date: today - Days::new(age_days),
        status: BatteryStatus::Active,
    }
}
