# Bosun: report the working directory to the terminal (OSC 7) at every
# prompt, so Bosun can follow it. Source this from ~/.bashrc.
__bosun_osc7() {
    local path=$PWD encoded= c i LC_ALL=C
    # Percent-encode every byte outside the URL-safe set (spaces, %, UTF-8).
    for ((i = 0; i < ${#path}; i++)); do
        c=${path:i:1}
        case $c in
            [a-zA-Z0-9/._~-]) encoded+=$c ;;
            *) printf -v c '%%%02X' "'$c"; encoded+=$c ;;
        esac
    done
    printf '\033]7;file://%s%s\033\\' "${HOSTNAME:-$(hostname)}" "$encoded"
}
case ";${PROMPT_COMMAND[*]:-};" in
    *";__bosun_osc7;"*) ;;
    *) PROMPT_COMMAND="__bosun_osc7${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac
