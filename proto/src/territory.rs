//! The ISTAT territorial hierarchy (comune -> provincia -> regione) the
//! network routes and filters on.
//!
//! The list of all 7,896 comuni is embedded from `proto/data/istat-comuni.csv`
//! (ISTAT "Elenco dei comuni italiani", CC BY), so every binary validates
//! territory codes without reading files at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const CSV: &str = include_str!("../data/istat-comuni.csv");

/// One comune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comune {
    /// 6-digit ISTAT code, e.g. "072006".
    pub istat_code: String,
    /// Official name, e.g. "Bari".
    pub name: String,
    /// 3-digit code of the province or metropolitan city.
    pub province_code: String,
    /// Name of the province.
    pub province_name: String,
    /// Plate abbreviation of the province, e.g. "BA".
    pub province_abbr: String,
    /// 2-digit ISTAT region code.
    pub region_code: String,
    /// Name of the region.
    pub region_name: String,
    /// The comune's IPA code, which is also its node id (`c_a662`).
    pub ipa_code: String,
    /// Provincial capital.
    pub is_capoluogo: bool,
}

/// What kind of unit a territory code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A 6-digit comune code.
    Comune,
    /// A 3-digit province code.
    Provincia,
    /// A 2-digit region code.
    Regione,
}

/// The hierarchy, indexed.
#[derive(Debug)]
pub struct Territory {
    comuni: BTreeMap<String, Comune>,
    provinces: BTreeSet<String>,
    regions: BTreeSet<String>,
}

impl Territory {
    /// The embedded hierarchy, parsed once.
    pub fn italy() -> &'static Territory {
        static ITALY: OnceLock<Territory> = OnceLock::new();
        ITALY.get_or_init(|| Territory::parse(CSV).expect("embedded ISTAT list is valid"))
    }

    fn parse(csv_text: &str) -> Result<Self, csv::Error> {
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let mut comuni = BTreeMap::new();
        let mut provinces = BTreeSet::new();
        let mut regions = BTreeSet::new();
        for row in reader.records() {
            let row = row?;
            let field = |i: usize| row.get(i).unwrap_or_default().to_string();
            let comune = Comune {
                istat_code: field(0),
                name: field(1),
                province_code: field(2),
                province_name: field(3),
                province_abbr: field(4),
                region_code: field(5),
                region_name: field(6),
                ipa_code: field(8),
                is_capoluogo: field(9) == "1",
            };
            provinces.insert(comune.province_code.clone());
            regions.insert(comune.region_code.clone());
            comuni.insert(comune.istat_code.clone(), comune);
        }
        Ok(Self {
            comuni,
            provinces,
            regions,
        })
    }

    /// The comune with this 6-digit code.
    pub fn comune(&self, istat_code: &str) -> Option<&Comune> {
        self.comuni.get(istat_code)
    }

    /// The comune whose IPA code (node id) this is.
    pub fn comune_by_ipa(&self, ipa_code: &str) -> Option<&Comune> {
        self.comuni.values().find(|c| c.ipa_code == ipa_code)
    }

    /// Every comune, by code.
    pub fn comuni(&self) -> impl Iterator<Item = &Comune> {
        self.comuni.values()
    }

    /// Which level a code names, if it exists.
    pub fn level_of(&self, code: &str) -> Option<Level> {
        match code.len() {
            6 if self.comuni.contains_key(code) => Some(Level::Comune),
            3 if self.provinces.contains(code) => Some(Level::Provincia),
            2 if self.regions.contains(code) => Some(Level::Regione),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_list_holds_every_comune_and_its_hierarchy() {
        let italy = Territory::italy();
        assert_eq!(italy.comuni().count(), 7896);
        let bari = italy.comune("072006").unwrap();
        assert_eq!(bari.name, "Bari");
        assert_eq!(bari.ipa_code, "c_a662");
        assert_eq!(bari.region_name, "Puglia");
        assert_eq!(italy.level_of("072006"), Some(Level::Comune));
        assert_eq!(italy.level_of(&bari.province_code), Some(Level::Provincia));
        assert_eq!(italy.level_of("16"), Some(Level::Regione));
        assert_eq!(italy.level_of("999999"), None);
        assert_eq!(italy.comune_by_ipa("c_c426").unwrap().name, "Celano");
    }
}
