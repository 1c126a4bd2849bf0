//! The dashboard: a small front end (plain ES modules under `web/`, Apache ECharts
//! vendored under `web/vendor/echarts/`) embedded in the binary and served at `/` and
//! `/web/...`, so no request leaves the machine at run time. The page signs in with an
//! account token and reads everything through the `/api` routes; the optional boundary
//! GeoJSON (`api.boundaries_geojson`) is the only file read at run time.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;

/// One embedded file: its path under `/web/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media_type:expr) => {
        Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads (the test `every_asset_the_page_names_is_embedded`
/// keeps this list and the page's imports in step).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/overview.js", JS),
    asset!("js/risk.js", JS),
    asset!("js/work.js", JS),
    asset!("js/live.js", JS),
    asset!("vendor/echarts/echarts.min.js", JS),
    asset!("vendor/echarts/LICENSE", "text/plain; charset=utf-8"),
    asset!("vendor/echarts/NOTICE", "text/plain; charset=utf-8"),
    asset!("vendor/echarts/VERSION", "text/plain; charset=utf-8"),
    asset!(
        "vendor/echarts/licenses/LICENSE-d3",
        "text/plain; charset=utf-8"
    ),
];

/// Only this origin: scripts, styles, data (ECharts writes inline styles, hence
/// `'unsafe-inline'` for styles alone).
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The entity tag of an asset: a hash of its bytes, so a browser revalidates with one
/// small request and downloads again only what another build changed.
fn etag(asset: &Asset) -> String {
    format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(asset.bytes))
}

fn respond(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.bytes.into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    // Embedded in this build: revalidate cheaply, never serve another build's copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// `/`: the page.
pub async fn index(request: HeaderMap) -> Response {
    match find("index.html") {
        Some(asset) => respond(asset, &request),
        None => Problem::not_found("page").into_response(),
    }
}

/// `/web/{*path}`: an embedded asset.
pub async fn asset(Path(path): Path<String>, request: HeaderMap) -> Response {
    match find(&path) {
        Some(asset) => respond(asset, &request),
        None => Problem::not_found("asset").into_response(),
    }
}

/// `/web/boundaries.geojson`: the boundaries `api.boundaries_geojson` names, or an
/// empty collection when none is configured or it cannot be read (the page then draws
/// points only; a 404 would be an error in the browser's console). Read on each
/// request, so a corrected file needs no restart.
pub async fn boundaries(State(state): State<AppState>) -> Response {
    const EMPTY: &str = r#"{"type":"FeatureCollection","features":[]}"#;
    let path = state.settings.api.boundaries_geojson.trim();
    let body = if path.is_empty() {
        EMPTY.as_bytes().to_vec()
    } else {
        match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path, error = %crate::telemetry::Chain(&error), "cannot read the boundary GeoJSON");
                EMPTY.as_bytes().to_vec()
            }
        }
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// Every `./x.js` import, `href` and `src` of the page's own files names an
    /// embedded asset, so the page never asks for a file the binary lacks.
    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            let Ok(text) = std::str::from_utf8(asset.bytes) else {
                continue;
            };
            let dir = asset.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            for quote in ['"', '\''] {
                for piece in text.split(quote).skip(1).step_by(2) {
                    let target = if let Some(rest) = piece.strip_prefix("/web/") {
                        rest.to_string()
                    } else if let Some(rest) = piece.strip_prefix("./") {
                        if dir.is_empty() {
                            rest.to_string()
                        } else {
                            format!("{dir}/{rest}")
                        }
                    } else {
                        continue;
                    };
                    if target.ends_with(".js")
                        || target.ends_with(".css")
                        || target.ends_with(".svg")
                    {
                        assert!(
                            names.contains(&target.as_str()),
                            "{} names {target}, which is not embedded",
                            asset.path
                        );
                    }
                }
            }
        }
    }

    /// Every file under `web/` is embedded (a file added there and not listed would
    /// be missing from the binary).
    #[test]
    fn every_file_under_web_is_embedded() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("web/ reads") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        let names: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for file in files.iter().filter(|f| !f.ends_with("SHA256SUMS")) {
            assert!(names.contains(&file.as_str()), "web/{file} is not embedded");
        }
    }

    #[test]
    fn no_asset_names_another_host() {
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            // The SVG namespace is a name, never fetched.
            let text = String::from_utf8_lossy(asset.bytes)
                .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            for scheme in ["http://", "https://", "//cdn"] {
                assert!(
                    !text.contains(scheme),
                    "{} names a URL ({scheme}); every asset is served by yujing itself",
                    asset.path
                );
            }
        }
    }
}
