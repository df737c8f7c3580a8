//! `whale train plot`: renders a run's `metrics.jsonl` to a PNG with two panels, the losses (main
//! next-token CE in blue, mean MTP CE in orange, held-out main CE in green where measured) and the expert load max/mean of every MoE layer
//! (one line per layer; 1.0 = perfect balance), against the optimizer step. Self-contained: a
//! small raster, a 3×5 digit font for the axis ranges and a PNG encoder over flate2.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::{write::ZlibEncoder, Compression};

use crate::train::StepMetrics;

const WIDTH: usize = 900;
const PANEL: usize = 300;
const MARGIN: usize = 40;
const COLORS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

struct Canvas {
    pixels: Vec<u8>,
    height: usize,
}

/// 3×5 glyphs, one row per 3 bits (MSB left), for the characters of axis numbers.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => [0; 5],
    }
}

impl Canvas {
    fn new(height: usize) -> Self {
        Self {
            pixels: vec![255; WIDTH * height * 3],
            height,
        }
    }

    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..self.height as i64).contains(&y) {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let n = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            self.set(
                (x0 + (x1 - x0) * t).round() as i64,
                (y0 + (y1 - y0) * t).round() as i64,
                rgb,
            );
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str) {
        for (k, c) in s.chars().enumerate() {
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(
                                (x + k * 8 + col * 2 + dx) as i64,
                                (y + row * 2 + dy) as i64,
                                [0, 0, 0],
                            );
                        }
                    }
                }
            }
        }
    }

    /// One panel at vertical offset `top`: axes, the y range printed at the left, the lines.
    fn panel(&mut self, top: usize, steps: &[f64], series: &[Vec<f64>]) {
        let values = series.iter().flatten().copied().filter(|v| v.is_finite());
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        };
        let (x_max, plot_w, plot_h) = (
            steps.last().copied().unwrap_or(1.0).max(1.0),
            (WIDTH - 2 * MARGIN) as f64,
            (PANEL - 2 * MARGIN) as f64,
        );
        let at = |step: f64, v: f64| {
            (
                MARGIN as f64 + step / x_max * plot_w,
                (top + PANEL - MARGIN) as f64 - (v - lo) / (hi - lo) * plot_h,
            )
        };
        let (x0, y0) = (MARGIN as f64, (top + PANEL - MARGIN) as f64);
        self.line((x0, y0), (x0 + plot_w, y0), [0, 0, 0]);
        self.line((x0, y0), (x0, y0 - plot_h), [0, 0, 0]);
        self.text(4, top + MARGIN - 14, &format!("{hi:.3}"));
        self.text(4, top + PANEL - MARGIN + 4, &format!("{lo:.3}"));
        self.text(
            WIDTH - MARGIN - 40,
            top + PANEL - MARGIN + 8,
            &format!("{x_max}"),
        );
        // Points that are not finite (a series not measured at that step, such as the held-out
        // loss between evaluations) are bridged: each line joins a series' finite points.
        for (k, ys) in series.iter().enumerate() {
            let rgb = COLORS[k % COLORS.len()];
            let mut points = steps.iter().zip(ys).filter(|(_, v)| v.is_finite());
            let Some(mut prev) = points.next() else {
                continue;
            };
            for next in points {
                self.line(at(*prev.0, *prev.1), at(*next.0, *next.1), rgb);
                prev = next;
            }
        }
    }

    fn png(&self) -> Result<Vec<u8>> {
        let mut raw = Vec::with_capacity((WIDTH * 3 + 1) * self.height);
        for row in self.pixels.chunks(WIDTH * 3) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&raw)?;
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(WIDTH as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (b"IHDR", ihdr),
            (b"IDAT", z.finish()?),
            (b"IEND", Vec::new()),
        ] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(&data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        Ok(out)
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Reads `run_dir/metrics.jsonl` and writes the loss and expert-load chart to `out`.
pub fn plot(run_dir: &Path, out: &Path) -> Result<usize> {
    let path = run_dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let metrics: Vec<StepMetrics> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if metrics.is_empty() {
        bail!("{} has no steps yet", path.display());
    }
    let canvas = render(&metrics);
    std::fs::write(out, canvas.png()?).with_context(|| format!("writing {}", out.display()))?;
    Ok(metrics.len())
}

/// The two panels of `metrics` (which must not be empty).
fn render(metrics: &[StepMetrics]) -> Canvas {
    let steps: Vec<f64> = metrics.iter().map(|m| m.step as f64).collect();
    let losses = vec![
        metrics.iter().map(|m| m.main_loss).collect(),
        metrics.iter().map(|m| m.mtp_loss).collect(),
        metrics
            .iter()
            .map(|m| m.val_loss.unwrap_or(f64::NAN))
            .collect(),
    ];
    let layers = metrics[0].expert_load.len();
    let loads: Vec<Vec<f64>> = (0..layers)
        .map(|l| {
            metrics
                .iter()
                .map(|m| m.expert_load.get(l).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let mut canvas = Canvas::new(2 * PANEL);
    canvas.panel(0, &steps, &losses);
    canvas.panel(PANEL, &steps, &loads);
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_reference_value() {
        // CRC of the IEND chunk type, present in every PNG file.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    /// Metrics of 20 steps with falling losses; a held-out loss every 5 steps when `val`.
    fn metrics(val: bool) -> Vec<String> {
        (1..=20)
            .map(|s| {
                let v = if val && s % 5 == 0 {
                    format!(r#","val_loss":{}"#, 7.0 / s as f64)
                } else {
                    String::new()
                };
                format!(
                    r#"{{"step":{s},"tokens":{},"loss":1,"main_loss":{},"mtp_loss":{},"balance_loss":1,"lr":0.001,"grad_norm":1,"mtp_lambda":0.3,"bias_gamma":0.001,"batch_sequences":8,"expert_load":[{},1.1],"step_seconds":0.1,"tokens_per_second":100{v}}}"#,
                    s * 512,
                    5.0 / s as f64,
                    6.0 / s as f64,
                    1.0 + 2.0 / s as f64
                )
            })
            .collect()
    }

    fn has_color(canvas: &Canvas, rgb: [u8; 3]) -> bool {
        canvas.pixels.chunks(3).any(|p| p == rgb)
    }

    #[test]
    fn held_out_loss_is_drawn_across_the_steps_between_evaluations() {
        let parse = |lines: Vec<String>| -> Vec<StepMetrics> {
            lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let with = parse(metrics(true));
        assert_eq!(with[4].val_loss, Some(7.0 / 5.0));
        assert!(has_color(&render(&with), COLORS[2]));
        assert!(!has_color(&render(&parse(metrics(false))), COLORS[2]));
    }

    #[test]
    fn writes_a_png_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let lines = metrics(true);
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let out = dir.path().join("curves.png");
        assert_eq!(plot(dir.path(), &out).unwrap(), 20);
        let png = std::fs::read(out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
    }
}
