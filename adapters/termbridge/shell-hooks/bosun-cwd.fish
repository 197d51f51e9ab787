# Bosun: report the working directory to the terminal (OSC 7) at every
# prompt, so Bosun can follow it. Source this from ~/.config/fish/config.fish.
function __bosun_osc7 --on-event fish_prompt
    # string escape --style=url percent-encodes all but the URL-safe bytes,
    # and keeps the slashes.
    printf '\e]7;file://%s%s\e\\' $hostname (string escape --style=url -- $PWD)
end
