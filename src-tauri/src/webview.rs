//! The web view's settings for a single-page record viewer, chosen for memory (issue 13: the
//! app and its web view within 250 MB after 50 records; BENCHMARKS.md has what each gained).
//!
//! On Linux (WebKitGTK, through wry), after the window is made:
//! - hardware acceleration policy `Never`: no GL compositing. The UI is text, tables and SVG,
//!   which WebKit paints well on the CPU; with compositing on, a machine without a GPU driver
//!   (Xvfb, many thin clients) composites through Mesa's llvmpipe, which loads LLVM and keeps
//!   layer buffers in both the web process and the app;
//! - WebGL off (wry turns it on; nothing here draws with it);
//! - the page cache off: the app is one page that never navigates, so there is no previous page
//!   worth keeping alive;
//! - cache model `DocumentViewer`: no memory cache of loaded resources, which the embedded
//!   `ui/dist` (served by the custom protocol from the binary) does not need.
//!
//! Elsewhere nothing is changed.

/// Applies the settings above to the main window's web view.
pub fn apply(window: &tauri::WebviewWindow) -> tauri::Result<()> {
    window.with_webview(|webview| {
        #[cfg(target_os = "linux")]
        linux::apply(&webview.inner());
        #[cfg(not(target_os = "linux"))]
        let _ = webview;
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use webkit2gtk::{
        CacheModel, HardwareAccelerationPolicy, SettingsExt, WebContextExt, WebViewExt,
    };

    pub fn apply(view: &webkit2gtk::WebView) {
        match WebViewExt::settings(view) {
            Some(settings) => {
                settings.set_hardware_acceleration_policy(HardwareAccelerationPolicy::Never);
                settings.set_enable_webgl(false);
                settings.set_enable_page_cache(false);
            }
            None => tracing::warn!("the web view has no settings to tune"),
        }
        match view.context() {
            Some(context) => context.set_cache_model(CacheModel::DocumentViewer),
            None => tracing::warn!("the web view has no context to tune"),
        }
    }
}
