//! A report plugin's table as a PDF: A4 landscape pages of a fixed-width
//! table (Courier, one of the 14 fonts every PDF reader has, so nothing is
//! embedded and column widths are exact), the title on the first page, the
//! header row repeated on every page, page numbers at the foot.

use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};

use super::bindings::Table;

const PAGE_W: f32 = 842.0;
const PAGE_H: f32 = 595.0;
const MARGIN: f32 = 36.0;
const SIZE: f32 = 8.0;
/// Courier's advance width is 600/1000 of the size for every glyph.
const CHAR_W: f32 = SIZE * 0.6;
const LINE: f32 = SIZE * 1.4;
const TITLE_SIZE: f32 = 14.0;
const GAP: usize = 2;
/// Widest a column may be before it is shortened, in characters.
const MAX_COLUMN: usize = 48;

/// Encodes text for WinAnsiEncoding (Latin-1 and a few typographic marks);
/// anything else prints as `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '€' => 0x80,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            c if (' '..='~').contains(&c) || ('\u{a0}'..='\u{ff}').contains(&c) => c as u8,
            _ => b'?',
        })
        .collect()
}

/// `text` cut to `width` characters, the cut marked with `…`.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Column widths in characters: each column's longest cell, capped, then
/// the widest shortened until the row fits the page.
fn widths(t: &Table) -> Vec<usize> {
    let columns = t
        .columns
        .len()
        .max(t.rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut w = vec![1usize; columns];
    for row in std::iter::once(&t.columns).chain(&t.rows) {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count()).min(MAX_COLUMN);
        }
    }
    let room = ((PAGE_W - 2.0 * MARGIN) / CHAR_W) as usize;
    while w.iter().sum::<usize>() + GAP * columns.saturating_sub(1) > room {
        let Some(widest) = (0..columns).max_by_key(|&i| w[i]) else {
            break;
        };
        if w[widest] <= 4 {
            break;
        }
        w[widest] -= 1;
    }
    w
}

fn line(row: &[String], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = fit(row.get(i).map_or("", String::as_str), *width);
        out.push_str(&cell);
        if i + 1 < widths.len() {
            let pad = width - cell.chars().count() + GAP;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out
}

fn text(content: &mut Content, font: Name, size: f32, x: f32, y: f32, s: &str) {
    content
        .begin_text()
        .set_font(font, size)
        .next_line(x, y)
        .show(Str(&win_ansi(s)))
        .end_text();
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(data);
    z.finish().unwrap_or_default()
}

/// The PDF document of `t`.
pub fn render(t: &Table) -> Vec<u8> {
    let widths = widths(t);
    let rule = "-".repeat(widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1));
    let header = line(&t.columns, &widths);
    let body_top = PAGE_H - MARGIN - TITLE_SIZE * 1.8;
    let per_page = (((body_top - MARGIN - LINE) / LINE) as usize)
        .saturating_sub(2)
        .max(1);
    let chunks: Vec<&[Vec<String>]> = if t.rows.is_empty() {
        vec![&[]]
    } else {
        t.rows.chunks(per_page).collect()
    };

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let font_name = Name(b"F1");
    let page_ids: Vec<Ref> = (0..chunks.len())
        .map(|i| Ref::new(4 + 2 * i as i32))
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(page_ids.len() as i32);
    pdf.type1_font(font)
        .base_font(Name(b"Courier"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (n, rows) in chunks.iter().enumerate() {
        let (page_id, content_id) = (page_ids[n], Ref::new(5 + 2 * n as i32));
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree);
        page.contents(content_id);
        page.resources().fonts().pair(font_name, font);
        page.finish();

        let mut content = Content::new();
        text(
            &mut content,
            font_name,
            TITLE_SIZE,
            MARGIN,
            PAGE_H - MARGIN - TITLE_SIZE,
            &t.title,
        );
        let mut y = body_top;
        for s in [&header, &rule] {
            text(&mut content, font_name, SIZE, MARGIN, y, s);
            y -= LINE;
        }
        for row in rows.iter() {
            text(
                &mut content,
                font_name,
                SIZE,
                MARGIN,
                y,
                &line(row, &widths),
            );
            y -= LINE;
        }
        let foot = format!("page {} / {}", n + 1, chunks.len());
        let x = PAGE_W - MARGIN - CHAR_W * foot.len() as f32;
        text(&mut content, font_name, SIZE, x, MARGIN / 2.0, &foot);
        pdf.stream(content_id, &deflate(&content.finish()))
            .filter(Filter::FlateDecode);
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: usize) -> Table {
        Table {
            title: "Battery health — March".into(),
            columns: vec!["Battery".into(), "SOH (%)".into(), "Note".into()],
            rows: (0..rows)
                .map(|i| {
                    vec![
                        format!("BAT-{i:04}"),
                        format!("{:.1}", 90.0 + i as f64 / 10.0),
                        "x".repeat(i % 200),
                    ]
                })
                .collect(),
        }
    }

    fn pages_text(bytes: &[u8]) -> Vec<String> {
        let doc = lopdf::Document::load_mem(bytes).expect("a readable PDF");
        let pages = doc.get_pages();
        pages
            .keys()
            .map(|n| doc.extract_text(&[*n]).expect("text"))
            .collect()
    }

    #[test]
    fn every_row_is_on_a_page_with_the_header() {
        let t = table(120);
        let pages = pages_text(&render(&t));
        assert!(pages.len() >= 3, "{} pages", pages.len());
        assert!(pages[0].contains("Battery health"));
        for (n, p) in pages.iter().enumerate() {
            assert!(p.contains("SOH (%)"), "header on page {}", n + 1);
            assert!(p.contains(&format!("page {} / {}", n + 1, pages.len())));
        }
        let all = pages.concat();
        for i in 0..120 {
            assert!(all.contains(&format!("BAT-{i:04}")), "row {i}");
        }
        assert!(all.contains("101.9"));
    }

    #[test]
    fn long_cells_are_cut_to_fit_the_page() {
        let w = widths(&table(200));
        assert!(w.iter().sum::<usize>() + GAP * 2 <= ((PAGE_W - 2.0 * MARGIN) / CHAR_W) as usize);
        assert_eq!(w[2], MAX_COLUMN);
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(win_ansi("é°–✓"), vec![0xe9, 0xb0, 0x96, b'?']);
    }

    #[test]
    fn an_empty_table_is_one_page() {
        assert_eq!(pages_text(&render(&table(0))).len(), 1);
    }
}
