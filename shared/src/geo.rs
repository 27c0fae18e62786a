//! Distances between two positions (haversine, Earth radius 6371 km) and their wire formats.

const EARTH_RADIUS_METERS: f64 = 6_371_000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    pub latitude: f64,
    pub longitude: f64,
}

impl Position {
    /// A position, if the coordinates are finite and within range.
    pub fn new(latitude: f64, longitude: f64) -> Option<Position> {
        let valid = latitude.is_finite()
            && longitude.is_finite()
            && (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude);
        valid.then_some(Position {
            latitude,
            longitude,
        })
    }
}

/// Great-circle distance in meters.
pub fn distance_meters(a: Position, b: Position) -> f64 {
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let delta_lat = (b.latitude - a.latitude).to_radians();
    let delta_lon = (b.longitude - a.longitude).to_radians();
    let h =
        (delta_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (delta_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_METERS * h.sqrt().min(1.0).asin()
}

/// `distance_formatted` of `distance_update` and the session snapshot: "X.X km away" from 1000 m
/// up, "N meters away" below.
pub fn format_away(meters: f64) -> String {
    let rounded = meters.round();
    if rounded >= 1000.0 {
        format!("{:.1} km away", meters / 1000.0)
    } else {
        format!("{rounded:.0} meters away")
    }
}

/// `work_assigned.distance`: always kilometres with one decimal ("2.5 km", "0.3 km").
pub fn format_km(meters: f64) -> String {
    format!("{:.1} km", meters / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_around_one_kilometre() {
        assert_eq!(format_away(999.4), "999 meters away");
        assert_eq!(format_away(999.6), "1.0 km away");
        assert_eq!(format_away(1000.0), "1.0 km away");
        assert_eq!(format_away(1250.5), "1.3 km away");
        assert_eq!(format_away(12.2), "12 meters away");
        assert_eq!(format_km(300.0), "0.3 km");
        assert_eq!(format_km(2500.0), "2.5 km");
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        let delhi = Position::new(28.7041, 77.1025).expect("valid");
        let one_degree_north = Position::new(29.7041, 77.1025).expect("valid");
        let meters = distance_meters(delhi, one_degree_north);
        assert!((meters - 111_194.9).abs() < 1.0, "{meters}");
    }

    #[test]
    fn out_of_range_coordinates_are_refused() {
        assert!(Position::new(91.0, 0.0).is_none());
        assert!(Position::new(0.0, 181.0).is_none());
        assert!(Position::new(f64::NAN, 0.0).is_none());
    }
}
