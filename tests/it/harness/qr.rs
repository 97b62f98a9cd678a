//! Reads QR codes back from the images kurz draws, with decoders that know nothing of how kurz
//! makes them: the png crate's decoder for a PNG's pixels, a small reader of the SVG's path for
//! the vector image, and rqrr (a Rust port of the quirc scanner) for the code in the pixels.
//! Shared with the unit tests of `src/qr.rs` (by `#[path]`), so both read codes one way.

/// Pixels per SVG user unit (one module) when the SVG is drawn for the scanner.
const SVG_SCALE: usize = 8;

/// The text of the one QR code in a PNG image.
pub fn read_png(png: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    // Whatever the depth (kurz writes 1 bit per pixel), one byte of grey per pixel.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![
        0;
        reader
            .output_buffer_size()
            .expect("an image that fits memory")
    ];
    let frame = reader.next_frame(&mut pixels).expect("the PNG's image");
    assert_eq!(frame.color_type, png::ColorType::Grayscale, "a grey image");
    let (width, height, line) = (frame.width as usize, frame.height as usize, frame.line_size);
    read(width, height, |x, y| pixels[y * line + x])
}

/// The text of the one QR code in an SVG image drawn as kurz draws it: a light background and
/// one dark path of axis-aligned rectangles (`M x y`, then `h`/`v` moves, then `z`), in the
/// units of a `viewBox="0 0 W H"`. Anything else in the path fails the read.
pub fn read_svg(svg: &str) -> String {
    let (width, height) = {
        let view_box = between(svg, "viewBox=\"", "\"");
        let numbers: Vec<usize> = view_box
            .split(' ')
            .map(|n| n.parse().expect("a whole-number viewBox"))
            .collect();
        assert_eq!(
            numbers[..2],
            [0, 0],
            "viewBox starts at the origin: {view_box}"
        );
        (numbers[2], numbers[3])
    };
    let path = between(svg, "<path d=\"", "\"");
    assert!(
        svg.contains(&format!("<path d=\"{path}\" fill=\"#000\"")),
        "the path is drawn dark"
    );
    let mut dark = vec![false; width * height];
    for subpath in path.split_terminator('z') {
        let corners = rectangle(subpath);
        for y in corners.1..corners.3 {
            for x in corners.0..corners.2 {
                assert!(x < width && y < height, "{subpath} leaves the viewBox");
                dark[y * width + x] = true;
            }
        }
    }
    read(width * SVG_SCALE, height * SVG_SCALE, |x, y| {
        if dark[(y / SVG_SCALE) * width + x / SVG_SCALE] {
            0
        } else {
            255
        }
    })
}

/// The text between the first `start` in `text` and the `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    let len = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no end to {start}"));
    &text[from..from + len]
}

/// The rectangle `(left, top, right, bottom)` one subpath (`M x y`, then relative `h`/`v`
/// moves) outlines; fails unless it is one.
fn rectangle(subpath: &str) -> (usize, usize, usize, usize) {
    let mut points: Vec<(i64, i64)> = Vec::new();
    let mut rest = subpath;
    let number = |text: &mut &str| -> i64 {
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(text.len());
        let (n, tail) = text.split_at(end);
        *text = tail.trim_start();
        n.parse()
            .unwrap_or_else(|_| panic!("a number in {subpath}"))
    };
    while let Some(command) = rest.chars().next() {
        rest = &rest[1..];
        let &(x, y) = points.last().unwrap_or(&(0, 0));
        match command {
            'M' if points.is_empty() => {
                let x = number(&mut rest);
                let y = number(&mut rest);
                points.push((x, y));
            }
            'h' if !points.is_empty() => points.push((x + number(&mut rest), y)),
            'v' if !points.is_empty() => points.push((x, y + number(&mut rest))),
            other => panic!("{other:?} in {subpath:?}: not a path this reader draws"),
        }
    }
    let xs = || points.iter().map(|p| p.0);
    let ys = || points.iter().map(|p| p.1);
    let (left, right) = (xs().min().expect("points"), xs().max().expect("points"));
    let (top, bottom) = (ys().min().expect("points"), ys().max().expect("points"));
    assert!(
        points.len() == 4
            && points
                .iter()
                .all(|&(x, y)| (x == left || x == right) && (y == top || y == bottom))
            && left < right
            && top < bottom
            && left >= 0
            && top >= 0,
        "{subpath:?} is not a rectangle"
    );
    let at = |n: i64| usize::try_from(n).expect("inside the viewBox");
    (at(left), at(top), at(right), at(bottom))
}

/// The text of the one QR code in a `width` x `height` image of grey levels (0 black).
fn read(width: usize, height: usize, grey: impl FnMut(usize, usize) -> u8) -> String {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, grey);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, text) = grids[0].decode().expect("a QR code that reads");
    text
}
