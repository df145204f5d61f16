//! Photos from citizens: decoded, turned upright, and encoded again, so
//! nothing but pixels is stored — no EXIF (GPS position, device, owner), no
//! XMP, no ICC profile, no comment. The original bytes are never kept
//! (DESIGN.md §11).

use std::io::Cursor;

use image::{ImageDecoder as _, ImageFormat, ImageReader};

/// Largest side accepted, in pixels (a decompression bomb is refused before
/// its pixels are allocated).
pub const MAX_SIDE: u32 = 12_000;

/// A photo ready to store.
#[derive(Debug, Clone)]
pub struct CleanPhoto {
    /// The encoded image, without metadata.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: &'static str,
    /// File extension for its name.
    pub extension: &'static str,
}

/// Why a photo is refused (the message names the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PhotoError(pub String);

/// Decodes `bytes` (JPEG, PNG or WebP), applies its EXIF orientation and
/// encodes it again in the same family without any metadata: JPEG stays
/// JPEG (quality 90), PNG stays PNG, WebP becomes lossless WebP.
///
/// # Errors
/// Not an image of those types, larger than [`MAX_SIDE`], or undecodable.
pub fn clean(bytes: &[u8]) -> Result<CleanPhoto, PhotoError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PhotoError(format!("media: cannot be read: {e}")))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        Some(ImageFormat::Avif) | None if is_heic(bytes) => {
            return Err(PhotoError(
                "media: HEIC photos are not accepted yet; send JPEG, PNG or WebP (phones can share as JPEG)".into(),
            ));
        }
        _ => {
            return Err(PhotoError(
                "media: must be a JPEG, PNG or WebP image".into(),
            ));
        }
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| PhotoError(format!("media: not a valid image: {e}")))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| PhotoError(format!("media: not a valid image: {e}")))?;
    picture.apply_orientation(orientation);
    let mut out = Cursor::new(Vec::with_capacity(bytes.len()));
    let (media_type, extension) = match format {
        ImageFormat::Jpeg => {
            let rgb = picture.to_rgb8();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&rgb)
                .map_err(|e| PhotoError(format!("media: cannot be encoded: {e}")))?;
            ("image/jpeg", "jpg")
        }
        ImageFormat::Png => {
            picture
                .write_to(&mut out, ImageFormat::Png)
                .map_err(|e| PhotoError(format!("media: cannot be encoded: {e}")))?;
            ("image/png", "png")
        }
        _ => {
            let rgba = picture.to_rgba8();
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    rgba.as_raw(),
                    rgba.width(),
                    rgba.height(),
                    image::ExtendedColorType::Rgba8,
                )
                .map_err(|e| PhotoError(format!("media: cannot be encoded: {e}")))?;
            ("image/webp", "webp")
        }
    };
    Ok(CleanPhoto {
        bytes: out.into_inner(),
        media_type,
        extension,
    })
}

/// An ISO BMFF file whose brand is HEIC/HEIF.
fn is_heic(bytes: &[u8]) -> bool {
    bytes.len() > 12
        && &bytes[4..8] == b"ftyp"
        && matches!(
            &bytes[8..12],
            b"heic" | b"heix" | b"mif1" | b"msf1" | b"heim" | b"heis"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG with an EXIF block holding a GPS position and a camera make.
    pub(crate) fn jpeg_with_gps() -> Vec<u8> {
        let mut plain = Cursor::new(Vec::new());
        let img =
            image::RgbImage::from_fn(64, 32, |x, y| image::Rgb([x as u8 * 4, y as u8 * 8, 90]));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 90)
            .encode_image(&img)
            .unwrap();
        let plain = plain.into_inner();
        // APP1 "Exif\0\0" + a little-endian TIFF with Make and a GPS IFD
        // pointer; enough for any reader to see GPS metadata.
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II*\0\x08\0\0\0");
        tiff.extend_from_slice(&2u16.to_le_bytes());
        // Make (0x010f), ASCII, 8 bytes at offset 38.
        tiff.extend_from_slice(&0x010fu16.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&38u32.to_le_bytes());
        // GPSInfo (0x8825), LONG, offset of the GPS IFD (46).
        tiff.extend_from_slice(&0x8825u16.to_le_bytes());
        tiff.extend_from_slice(&4u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&46u32.to_le_bytes());
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend_from_slice(b"PhoneCo\0");
        // GPS IFD: one entry, GPSLatitudeRef 'N'.
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&2u32.to_le_bytes());
        tiff.extend_from_slice(b"N\0\0\0");
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    #[test]
    fn metadata_is_stripped_and_the_result_is_an_image() {
        let original = jpeg_with_gps();
        assert!(original.windows(6).any(|w| w == b"Exif\0\0"));
        assert!(original.windows(7).any(|w| w == b"PhoneCo"));
        let clean = clean(&original).unwrap();
        assert_eq!(clean.media_type, "image/jpeg");
        assert!(
            !clean.bytes.windows(4).any(|w| w == b"Exif"),
            "no EXIF left"
        );
        assert!(!clean.bytes.windows(7).any(|w| w == b"PhoneCo"));
        let decoded = image::load_from_memory(&clean.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 32));
    }

    #[test]
    fn what_is_not_a_photo_is_refused_by_name() {
        assert!(
            clean(b"%PDF-1.7 not a photo")
                .unwrap_err()
                .0
                .contains("JPEG, PNG or WebP")
        );
        let mut heic = vec![0, 0, 0, 24];
        heic.extend_from_slice(b"ftypheic");
        heic.extend_from_slice(&[0; 16]);
        assert!(clean(&heic).unwrap_err().0.contains("HEIC"));
        let mut truncated = jpeg_with_gps();
        truncated.truncate(200);
        assert!(clean(&truncated).unwrap_err().0.starts_with("media:"));
    }
}
