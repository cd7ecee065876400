//! The report's maps: an equirectangular projection of 720 × 360 units
//! (x = (lon + 180) × 2, y = (90 − lat) × 2), the world's land from Natural
//! Earth (public domain; see `world/SOURCE.md`), and great circles.

use std::fmt::Write as _;

/// Natural Earth's 1:110m land as one SVG path in the projection above.
pub const LAND: &str = include_str!("world/land.path");

pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 360.0;

/// A point of the projection.
pub fn project(lat: f64, lon: f64) -> (f64, f64) {
    let lon = ((lon + 180.0).rem_euclid(360.0)) - 180.0;
    let lat = lat.clamp(-90.0, 90.0);
    ((lon + 180.0) * 2.0, (90.0 - lat) * 2.0)
}

/// Points along the great circle from `a` to `b` (lat, lon in degrees),
/// ends included: spherical interpolation of the two unit vectors.
pub fn great_circle(a: (f64, f64), b: (f64, f64), steps: usize) -> Vec<(f64, f64)> {
    let v = |(lat, lon): (f64, f64)| {
        let (la, lo) = (lat.to_radians(), lon.to_radians());
        [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
    };
    let (p, q) = (v(a), v(b));
    let dot = (p[0] * q[0] + p[1] * q[1] + p[2] * q[2]).clamp(-1.0, 1.0);
    let omega = dot.acos();
    let steps = steps.max(1);
    if omega < 1e-9 || (std::f64::consts::PI - omega).abs() < 1e-9 {
        // The same point, or antipodes (no single great circle): a line.
        return vec![a, b];
    }
    (0..=steps)
        .map(|i| {
            let t = i as f64 / steps as f64;
            let s0 = ((1.0 - t) * omega).sin() / omega.sin();
            let s1 = (t * omega).sin() / omega.sin();
            let r = [
                s0 * p[0] + s1 * q[0],
                s0 * p[1] + s1 * q[1],
                s0 * p[2] + s1 * q[2],
            ];
            let lat = r[2].clamp(-1.0, 1.0).asin().to_degrees();
            let lon = r[1].atan2(r[0]).to_degrees();
            (lat, lon)
        })
        .collect()
}

/// The SVG path data of the great circle from `a` to `b`, broken where it
/// crosses the antimeridian (so it does not streak across the map).
pub fn great_circle_path(a: (f64, f64), b: (f64, f64), steps: usize) -> String {
    let mut d = String::new();
    let mut last: Option<(f64, f64)> = None;
    for (lat, lon) in great_circle(a, b, steps) {
        let (x, y) = project(lat, lon);
        let jump = last.is_none_or(|(lx, _)| (x - lx).abs() > WIDTH / 2.0);
        // Whole units are finer than a pixel on every map of the page.
        let _ = write!(d, "{}{:.0} {:.0}", if jump { "M" } else { "L" }, x, y);
        last = Some((x, y));
    }
    d
}

/// A view box around the points (projected), at least `min_w` wide, 2:1,
/// inside the world.
pub fn view_box(points: &[(f64, f64)], min_w: f64) -> (f64, f64, f64, f64) {
    if points.is_empty() {
        return (0.0, 0.0, WIDTH, HEIGHT);
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let pad = 12.0;
    let mut w = (x1 - x0 + 2.0 * pad).max(min_w);
    let mut h = (y1 - y0 + 2.0 * pad).max(min_w / 2.0);
    // Keep 2:1, the shape of the little maps.
    if w < 2.0 * h {
        w = 2.0 * h;
    } else {
        h = w / 2.0;
    }
    let w = w.min(WIDTH);
    let h = h.min(HEIGHT);
    let cx = (x0 + x1) / 2.0;
    let cy = (y0 + y1) / 2.0;
    let x = (cx - w / 2.0).clamp(0.0, WIDTH - w);
    let y = (cy - h / 2.0).clamp(0.0, HEIGHT - h);
    (x, y, w, h)
}

/// Great-circle distance in km (for the page's words, when the evidence
/// gave none).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}
