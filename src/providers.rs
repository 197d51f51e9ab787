//! The kinds of provider this build knows: one factory per driver crate.
//! Adding a kind is a crate (or module) that implements
//! [`ProviderFactory`], and a line here.

use std::sync::Arc;

use bosun_driver::ProviderFactory;

pub fn kinds() -> Vec<Arc<dyn ProviderFactory>> {
    vec![
        Arc::new(bosun_builtin::DemoFactory),
        Arc::new(bosun_builtin::ShellFactory),
        Arc::new(bosun_acp::AcpFactory),
        Arc::new(bosun_codex::CodexFactory),
    ]
}
