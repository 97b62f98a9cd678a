//! QR codes of short URLs, as SVG or PNG, `size` pixels square. Pure: text in, image out. A
//! leaf: imports nothing of kurz.
//!
//! The `qrcode` crate makes the module matrix (error correction level M, which survives a
//! smudge or a logo); the drawing is done here, so it needs none of that crate's renderers:
//! SVG is one path of runs of dark modules, PNG is 1 bit per pixel through the `png` crate.
//! Both keep the four-module quiet zone readers need.

use std::fmt::Write as _;

use qrcode::{Color, EcLevel, QrCode};

/// The sizes, in pixels, a QR code can be asked for.
pub const SIZES: std::ops::RangeInclusive<u32> = 64..=1024;
/// Light modules around the code, as the QR specification asks.
const QUIET_ZONE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("cannot encode the text as a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("cannot write the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// The modules of `text`'s QR code: `width` x `width`, dark or light, row by row.
struct Modules {
    width: usize,
    dark: Vec<bool>,
}

impl Modules {
    fn of(text: &str) -> Result<Self, QrError> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)?;
        Ok(Self {
            width: code.width(),
            dark: code
                .to_colors()
                .into_iter()
                .map(|c| c == Color::Dark)
                .collect(),
        })
    }

    /// Width with the quiet zone on both sides.
    fn outer_width(&self) -> usize {
        self.width + 2 * QUIET_ZONE
    }

    fn rows(&self) -> impl Iterator<Item = &[bool]> {
        self.dark.chunks(self.width)
    }
}

/// An SVG image of `text`'s QR code, `size` pixels square (it scales without loss).
pub fn svg(text: &str, size: u32) -> Result<String, QrError> {
    let modules = Modules::of(text)?;
    let outer = modules.outer_width();
    let mut path = String::new();
    for (y, row) in modules.rows().enumerate() {
        let mut x = 0;
        while x < row.len() {
            if !row[x] {
                x += 1;
                continue;
            }
            let start = x;
            while x < row.len() && row[x] {
                x += 1;
            }
            let _ = write!(
                path,
                "M{} {}h{}v1h-{}z",
                start + QUIET_ZONE,
                y + QUIET_ZONE,
                x - start,
                x - start
            );
        }
    }
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {outer} {outer}" shape-rendering="crispEdges"><rect width="{outer}" height="{outer}" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    ))
}

/// A PNG image of `text`'s QR code: `size` pixels square, every module the same whole number
/// of pixels, centred (the margin left over is light). Should the code need more modules than
/// `size` has pixels, the image is one pixel per module instead.
pub fn png(text: &str, size: u32) -> Result<Vec<u8>, QrError> {
    let modules = Modules::of(text)?;
    let outer = modules.outer_width();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let scale = (size / outer).max(1);
    let side = size.max(scale * outer);
    let offset = (side - scale * outer) / 2 + QUIET_ZONE * scale;

    // 1-bit greyscale, 1 = light: start all light and clear the dark modules' bits.
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0xffu8; row_bytes * side];
    for (y, row) in modules.rows().enumerate() {
        for (x, _) in row.iter().enumerate().filter(|(_, dark)| **dark) {
            for py in offset + y * scale..offset + (y + 1) * scale {
                for px in offset + x * scale..offset + (x + 1) * scale {
                    pixels[py * row_bytes + px / 8] &= !(0x80 >> (px % 8));
                }
            }
        }
    }

    let side = u32::try_from(side).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

/// The scanner the tests read codes back with, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/it/harness/qr.rs"]
mod reader;

#[cfg(test)]
mod tests {
    use super::reader::{read_png, read_svg};
    use super::*;

    const URL: &str = "http://127.0.0.1:8080/aZ3kP9q";

    #[test]
    fn both_images_scan_as_the_text() {
        assert_eq!(read_svg(&svg(URL, 256).expect("svg")), URL);
        for size in [*SIZES.start(), 100, 333, *SIZES.end()] {
            assert_eq!(read_png(&png(URL, size).expect("png")), URL, "{size} px");
        }
    }

    #[test]
    fn svg_is_the_asked_size_with_a_quiet_zone() {
        let image = svg(URL, 256).expect("svg");
        assert!(image.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"256\""));
        // Version 3 (29 modules) for this URL at level M, plus 4 light modules each side.
        assert!(image.contains(r#"viewBox="0 0 37 37""#), "{image}");
        // The top-left finder pattern starts at the quiet zone: a run of 7 dark modules.
        assert!(image.contains("M4 4h7v1h-7z"));
    }

    #[test]
    fn png_is_exactly_the_asked_size() {
        for size in [*SIZES.start(), 100, 333, *SIZES.end()] {
            let image = png(URL, size).expect("png");
            assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
            // IHDR: width and height, big-endian, right after the chunk header.
            let width = u32::from_be_bytes([image[16], image[17], image[18], image[19]]);
            let height = u32::from_be_bytes([image[20], image[21], image[22], image[23]]);
            assert_eq!((width, height), (size, size));
        }
    }

    #[test]
    fn a_long_url_still_encodes() {
        let long = format!("https://kurz.example/{}", "a".repeat(64));
        assert_eq!(read_svg(&svg(&long, 64).expect("svg")), long);
        assert_eq!(read_png(&png(&long, 64).expect("png")), long);
    }
}
