//! GeoIP: where an address is, from MaxMind databases, with a small cache.
//!
//! Only the fields credwatch uses are decoded. An address that is not in a
//! database is an "unknown place": never an error, never a travel finding.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::source::event::truncate;

mod cache;
use cache::Cache;

use maxminddb::Reader;
use serde::Deserialize;

use crate::section::Checks;
use crate::time::Millis;

crate::section! {
    /// `[geoip]`: MaxMind databases.
    pub struct GeoIpConfig {
        /// MaxMind City (or Country) database; required while
        /// `impossible_travel` is enabled. The default is where
        /// `geoipupdate` writes it.
        pub city_db: String = "/var/lib/GeoIP/GeoLite2-City.mmdb".into(),
        /// Optional GeoLite2-ASN database (adds the network owner to
        /// evidence). Empty: not used.
        pub asn_db: String = String::new(),
        /// Optional GeoIP2-Anonymous-IP database (VPN, Tor, hosting).
        /// Empty: not used.
        pub anonymous_db: String = String::new(),
        /// Slots of the lookup cache (direct-mapped: an address, or its /24 or
        /// /48 when the databases hold that block whole, takes the
        /// slot its hash picks). 65,536 slots take about 4 MB.
        pub cache_size: usize = 65_536,
        /// How long (event time) a cached lookup is used, in seconds.
        pub cache_ttl_secs: u64 = 3600,
        /// `credwatch run` checks the database files this often (seconds)
        /// and reloads them, verified, when one changed (geoipupdate
        /// replaces them in place); a file that fails to open keeps the old
        /// databases in use. 0 turns this off.
        pub reload_check_secs: u64 = 60,
    }
}

impl GeoIpConfig {
    pub fn check(&self, c: &mut Checks) {
        if self.cache_size == 0 {
            c.fail("cache_size", "must be at least 1");
        }
    }
}

/// A database that cannot be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("GeoIP database {path} (setting geoip.{setting}) cannot be read: {source}. Check the path, or run geoipupdate to fetch it")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("GeoIP database {path} (setting geoip.{setting}) is not a valid MaxMind DB file: {message}. Download it again (geoipupdate)")]
    Corrupt {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("GeoIP database {path} (setting geoip.{setting}) is a {found} database; expected {expected}")]
    WrongType {
        setting: &'static str,
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
}

/// Anonymous-network flags (GeoIP2-Anonymous-IP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Anonymity {
    pub anonymous: bool,
    pub vpn: bool,
    pub hosting: bool,
    pub public_proxy: bool,
    pub tor: bool,
    pub residential_proxy: bool,
}

impl Anonymity {
    pub fn any(&self) -> bool {
        self.anonymous
            || self.vpn
            || self.hosting
            || self.public_proxy
            || self.tor
            || self.residential_proxy
    }

    /// The flags that are set, as words for evidence.
    pub fn labels(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (set, name) in [
            (self.vpn, "vpn"),
            (self.hosting, "hosting"),
            (self.public_proxy, "public_proxy"),
            (self.tor, "tor"),
            (self.residential_proxy, "residential_proxy"),
        ] {
            if set {
                v.push(name);
            }
        }
        if v.is_empty() && self.anonymous {
            v.push("anonymous");
        }
        v
    }
}

/// Where an address is, as the detectors need it on every login: no names,
/// nothing on the heap, cheap to cache and copy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Latitude and longitude in degrees, when the database has them.
    pub coords: Option<(f32, f32)>,
    /// MaxMind's accuracy radius in km (0 when unknown).
    pub accuracy_km: u16,
    pub anonymity: Anonymity,
    /// ISO country code as two ASCII bytes (`[0, 0]` when unknown).
    pub country: [u8; 2],
    /// The autonomous system (0 when unknown or no ASN database).
    pub asn: u32,
}

impl Point {
    /// The country code, when known.
    pub fn country(&self) -> Option<[u8; 2]> {
        (self.country != [0, 0]).then_some(self.country)
    }
    /// The autonomous system, when known.
    pub fn asn(&self) -> Option<u32> {
        (self.asn != 0).then_some(self.asn)
    }
}

/// Two ASCII letters of an ISO country code, or `[0, 0]`.
fn country_bytes(code: Option<&str>) -> [u8; 2] {
    match code.map(str::as_bytes) {
        Some([a, b]) => [a.to_ascii_uppercase(), b.to_ascii_uppercase()],
        _ => [0, 0],
    }
}

/// What is known about where an address is, names included (for evidence).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Place {
    /// Latitude and longitude in degrees, when the database has them.
    pub coords: Option<(f32, f32)>,
    /// MaxMind's accuracy radius in km (0 when unknown).
    pub accuracy_km: u16,
    pub country: Option<Box<str>>,
    pub city: Option<Box<str>>,
    pub asn: Option<u32>,
    pub asn_org: Option<Box<str>>,
    pub anonymity: Anonymity,
}

impl Place {
    /// "Changchun, CN", "CN", or "an unknown place".
    pub fn describe(&self) -> String {
        match (&self.city, &self.country) {
            (Some(c), Some(cc)) => format!("{c}, {cc}"),
            (None, Some(cc)) => cc.to_string(),
            (Some(c), None) => c.to_string(),
            (None, None) => "an unknown place".to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct CountryRec<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct CityRec<'a> {
    #[serde(borrow, default)]
    city: Option<Named<'a>>,
    #[serde(borrow, default)]
    country: Option<CountryRec<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<CountryRec<'a>>,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
struct LocationOnly<'a> {
    #[serde(default)]
    location: Option<Location>,
    #[serde(borrow, default)]
    country: Option<CountryRec<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<CountryRec<'a>>,
}

#[derive(Deserialize)]
struct AsnOnly {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct AsnRec<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct AnonRec {
    #[serde(default)]
    is_anonymous: bool,
    #[serde(default)]
    is_anonymous_vpn: bool,
    #[serde(default)]
    is_hosting_provider: bool,
    #[serde(default)]
    is_public_proxy: bool,
    #[serde(default)]
    is_tor_exit_node: bool,
    #[serde(default)]
    is_residential_proxy: bool,
}

/// Counters an operator may want (exported as metrics by the service).
#[derive(Debug, Default)]
pub struct GeoStats {
    /// Lookups that failed on a damaged record (the address is then an unknown place).
    pub errors: AtomicU64,
}

/// The cache's blocks: an IPv4 /24 and an IPv6 /48, the smallest
/// networks commonly routed, so a database's network is rarely smaller.
const BLOCK_V4: u8 = 24;
const BLOCK_V6: u8 = 48;
/// Whether a database's answer for `ip` holds for its whole block: the
/// network the database found is the block or larger. A failed lookup
/// does not.
fn covers_block<S: AsRef<[u8]>>(
    ip: IpAddr,
    found: &Result<maxminddb::LookupResult<'_, S>, maxminddb::MaxMindDbError>,
) -> bool {
    let Ok(Ok(net)) = found.as_ref().map(|l| l.network()) else {
        return false;
    };
    match (ip, net.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => net.prefix() <= BLOCK_V4,
        // An IPv4 address answered above the IPv4 subtree of an IPv6
        // database: the network holds all of IPv4.
        (IpAddr::V4(_), IpAddr::V6(_)) => true,
        (IpAddr::V6(_), _) => net.prefix() <= BLOCK_V6,
    }
}

/// The opened databases and the lookup cache.
pub struct GeoIp {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    anonymous: Option<Reader<Vec<u8>>>,
    cache: Cache,
    pub stats: GeoStats,
}

fn open(
    setting: &'static str,
    path: &str,
    expected: &'static str,
    accepts: &[&str],
) -> Result<Option<Reader<Vec<u8>>>, GeoError> {
    if path.is_empty() {
        return Ok(None);
    }
    let pb = PathBuf::from(path);
    let bytes = std::fs::read(Path::new(path)).map_err(|source| GeoError::Unreadable {
        setting,
        path: pb.clone(),
        source,
    })?;
    let reader = Reader::from_source(bytes).map_err(|e| GeoError::Corrupt {
        setting,
        path: pb.clone(),
        message: e.to_string(),
    })?;
    // A damaged search tree or data section only shows on lookup: verify
    // the whole file now, so a corrupt download fails at start-up (naming
    // the file), not mid-stream.
    if let Err(e) = reader.verify() {
        return Err(GeoError::Corrupt {
            setting,
            path: pb,
            message: e.to_string(),
        });
    }
    let found = reader.metadata().database_type.clone();
    if !accepts.iter().any(|a| found.contains(a)) {
        return Err(GeoError::WrongType {
            setting,
            path: pb,
            found,
            expected,
        });
    }
    Ok(Some(reader))
}

impl GeoIp {
    /// Opens the configured databases. A configured file that is missing,
    /// unreadable, corrupt or of the wrong kind is an error naming the file
    /// and the setting.
    pub fn open(cfg: &GeoIpConfig) -> Result<GeoIp, GeoError> {
        Ok(GeoIp {
            city: open(
                "city_db",
                &cfg.city_db,
                "a City or Country database",
                &["City", "Country", "city", "country"],
            )?,
            asn: open("asn_db", &cfg.asn_db, "an ASN database", &["ASN", "asn"])?,
            anonymous: open(
                "anonymous_db",
                &cfg.anonymous_db,
                "an Anonymous-IP database",
                &["Anonymous", "anonymous"],
            )?,
            cache: Cache::new(cfg.cache_size, cfg.cache_ttl_secs as Millis * 1000),
            stats: GeoStats::default(),
        })
    }

    /// Where `ip` is, looked up at most once per `cache_ttl_secs` of event
    /// time; the flag is true when the answer came from the cache. (The
    /// caller counts lookups and hits, per thread, so that no counter is
    /// shared on this path.)
    ///
    /// The cache holds a block (IPv4 /24, IPv6 /48) when every database's
    /// network for the address covers the whole block, so the block's other
    /// addresses have the very same records and are answered from it;
    /// otherwise it holds the address alone.
    pub fn point(&self, ip: IpAddr, now: Millis) -> (Point, bool) {
        let block = truncate(ip, BLOCK_V4, BLOCK_V6);
        for (key, is_block) in [(block, true), (ip, false)] {
            if let Some(point) = self.cache.get(key, is_block, now) {
                return (point, true);
            }
        }
        let (point, whole_block) = self.point_uncached(ip);
        let key = if whole_block { block } else { ip };
        self.cache.put(key, whole_block, point, now);
        (point, false)
    }

    /// Brings the cache slot of `ip`'s block into the processor's cache
    /// ahead of its event (see `Engine::warm`); changes nothing.
    pub fn warm(&self, ip: IpAddr) {
        self.cache.warm(truncate(ip, BLOCK_V4, BLOCK_V6));
    }

    /// The point of `ip`, and whether every database's network for it
    /// covers its whole block (see [`GeoIp::point`]).
    fn point_uncached(&self, ip: IpAddr) -> (Point, bool) {
        let mut point = Point::default();
        let mut whole = true;
        if let Some(r) = &self.city {
            let l = r.lookup(ip);
            whole &= covers_block(ip, &l);
            match l.and_then(|l| l.decode::<LocationOnly>()) {
                Ok(Some(rec)) => {
                    if let Some(loc) = rec.location {
                        if let (Some(lat), Some(lon)) = (loc.latitude, loc.longitude) {
                            point.coords = Some((lat as f32, lon as f32));
                        }
                        point.accuracy_km = loc.accuracy_radius.unwrap_or(0);
                    }
                    point.country = country_bytes(
                        rec.country
                            .and_then(|c| c.iso_code)
                            .or(rec.registered_country.and_then(|c| c.iso_code)),
                    );
                }
                Ok(None) => {}
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(r) = &self.asn {
            let l = r.lookup(ip);
            whole &= covers_block(ip, &l);
            match l.and_then(|l| l.decode::<AsnOnly>()) {
                Ok(Some(rec)) => point.asn = rec.autonomous_system_number.unwrap_or(0),
                Ok(None) => {}
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let (anonymity, anon_whole) = self.anonymity(ip);
        point.anonymity = anonymity;
        (point, whole && anon_whole)
    }

    fn anonymity(&self, ip: IpAddr) -> (Anonymity, bool) {
        let Some(r) = &self.anonymous else {
            return (Anonymity::default(), true);
        };
        let l = r.lookup(ip);
        let whole = covers_block(ip, &l);
        let a = match l.and_then(|l| l.decode::<AnonRec>()) {
            Ok(Some(a)) => Anonymity {
                anonymous: a.is_anonymous,
                vpn: a.is_anonymous_vpn,
                hosting: a.is_hosting_provider,
                public_proxy: a.is_public_proxy,
                tor: a.is_tor_exit_node,
                residential_proxy: a.is_residential_proxy,
            },
            Ok(None) => Anonymity::default(),
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Anonymity::default()
            }
        };
        (a, whole)
    }

    /// Where `ip` is, with names, straight from the databases (for
    /// evidence: called when a finding is written, not per event).
    pub fn place(&self, ip: IpAddr) -> Place {
        let mut place = Place::default();
        if let Some(r) = &self.city {
            match r.lookup(ip).and_then(|l| l.decode::<CityRec>()) {
                Ok(Some(rec)) => {
                    if let Some(loc) = rec.location {
                        if let (Some(lat), Some(lon)) = (loc.latitude, loc.longitude) {
                            place.coords = Some((lat as f32, lon as f32));
                        }
                        place.accuracy_km = loc.accuracy_radius.unwrap_or(0);
                    }
                    place.country = rec
                        .country
                        .and_then(|c| c.iso_code)
                        .or(rec.registered_country.and_then(|c| c.iso_code))
                        .map(Into::into);
                    place.city = rec
                        .city
                        .and_then(|c| c.names)
                        .and_then(|n| n.en)
                        .map(Into::into);
                }
                Ok(None) => {}
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(r) = &self.asn {
            match r.lookup(ip).and_then(|l| l.decode::<AsnRec>()) {
                Ok(Some(rec)) => {
                    place.asn = rec.autonomous_system_number;
                    place.asn_org = rec.autonomous_system_organization.map(Into::into);
                }
                Ok(None) => {}
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        place.anonymity = self.anonymity(ip).0;
        place
    }
}

/// Great-circle distance in km (haversine, mean Earth radius 6371 km).
pub fn distance_km(a: (f32, f32), b: (f32, f32)) -> f64 {
    let (lat1, lon1) = (f64::from(a.0).to_radians(), f64::from(a.1).to_radians());
    let (lat2, lon2) = (f64::from(b.0).to_radians(), f64::from(b.1).to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests;
