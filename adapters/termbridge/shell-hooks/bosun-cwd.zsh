# Bosun: report the working directory to the terminal (OSC 7) at every
# prompt, so Bosun can follow it. Source this from ~/.zshrc.
__bosun_osc7() {
    emulate -L zsh
    setopt extendedglob
    local LC_ALL=C
    # Percent-encode every byte outside the URL-safe set (spaces, %, UTF-8).
    local encoded=${PWD//(#m)[^a-zA-Z0-9\/._~-]/%${(l:2::0:)$(( [##16] #MATCH ))}}
    printf '\033]7;file://%s%s\033\\' "${HOST:-$(hostname)}" "$encoded"
}
autoload -Uz add-zsh-hook
add-zsh-hook precmd __bosun_osc7
