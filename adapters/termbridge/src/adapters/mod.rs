//! One module per terminal; each implements [`crate::TerminalControl`].

pub mod alacritty;
mod dbus;
pub mod kitty;
pub mod konsole;
pub mod tilix;
pub mod tmux;
pub mod wezterm;
