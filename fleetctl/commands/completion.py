"""``fleetctl completion bash|zsh|fish``: shell completion, as kubectl and ank have.

The script holds the commands and their flags (from the parser, when it is written); VINs
and workload names come from the broker when the shell asks, through the hidden
``fleetctl __complete vins|workloads`` (the retained presence and workload states: no car
is asked, and a broker that cannot be reached completes nothing).
"""

from __future__ import annotations

import argparse
import shlex

from fleetctl.client import live, presence
from fleetctl.commands import options
from fleetctl.commands.command import OK, Command, Invocation, define
from fleetctl.commands.options import Subcommands

SHELLS = ("bash", "zsh", "fish")
HIDDEN = "__complete"
# Seconds the shell waits at most for the broker's retained messages.
LISTEN, TIMEOUT = 0.3, 2.0
# Flags whose value is a file (the shell completes paths there).
FILE_FLAGS = (
    "--vins-file",
    "--sign-key",
    "-f",
    "--filename",
    "--db",
    "--password-file",
    "--tls-ca-file",
    "--tls-cert-file",
    "--tls-key-file",
)
# Positional words of `get`, `describe`, `delete` and `completion`.
WORDS = {
    "get": "workloads agents configs workload agent config",
    "describe": "car",
    "delete": "workload workloads config configs",
    "completion": " ".join(SHELLS),
    "rollout": "start status resume abort retry-failed list",
    "keys": "generate public",
}


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print the completion script for a shell; VINs and workload names are "
        'completed from the broker. bash: eval "$(fleetctl completion bash)" in ~/.bashrc; '
        'zsh: eval "$(fleetctl completion zsh)" in ~/.zshrc; fish: fleetctl completion '
        "fish > ~/.config/fish/completions/fleetctl.fish",
    )
    parser.add_argument("shell", choices=SHELLS)
    define(parser, Command(_script, offline=True))

    # Not listed in --help: what the scripts call.
    hidden = subcommands.add_parser(HIDDEN)
    options.add_broker(hidden)
    hidden.add_argument("what", choices=["vins", "workloads"])
    hidden.add_argument("--vin", action="append", default=[], help=argparse.SUPPRESS)
    define(hidden, Command(_candidates))


def _candidates(invocation: Invocation) -> int:
    """One candidate a line; nothing when the broker cannot be used (no noise in a shell)."""
    settings = invocation.settings
    if invocation.args.what == "vins":
        found = presence.collect(settings, listen=LISTEN, timeout=TIMEOUT)
        names = sorted(found)
    else:
        retained = live.collect_retained(
            settings, vins=invocation.vins, listen=LISTEN, timeout=TIMEOUT
        )
        names = sorted({row.workload for row in retained.workloads})
    # A name with a blank or a shell character would break the shell's word list.
    print("\n".join(name for name in names if name == shlex.quote(name)), flush=True)
    return OK


def _commands() -> dict[str, list[str]]:
    """Each command with its flags, from the parser."""
    from fleetctl.cli import build_parser  # noqa: PLC0415 (the app is built from the commands)

    parser = build_parser()
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name == HIDDEN:
                    continue
                flags = sorted(
                    {
                        o
                        for a in sub._actions
                        if a.help != argparse.SUPPRESS
                        for o in a.option_strings
                    }
                )
                found[name] = flags
    return found


def _script(invocation: Invocation) -> int:
    commands = _commands()
    shell = invocation.args.shell
    print(_fish(commands) if shell == "fish" else _bash(commands, zsh=shell == "zsh"), end="")
    return OK


def _bash(commands: dict[str, list[str]], *, zsh: bool) -> str:
    cases = "\n".join(
        f'        {name}) flags="{" ".join(flags)}" ;;' for name, flags in commands.items()
    )
    words = "\n".join(f'        {name}) words="{text}" ;;' for name, text in WORDS.items())
    files = "|".join(FILE_FLAGS)
    head = (
        '#compdef fleetctl\n# fleetctl completion for zsh: eval "$(fleetctl completion zsh)"\n'
        "autoload -U +X bashcompinit && bashcompinit\n"
        if zsh
        else '# fleetctl completion for bash: eval "$(fleetctl completion bash)"\n'
    )
    return f"""{head}_fleetctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local command="" vin="" positional=0 i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --vin) vin="${{COMP_WORDS[i+1]}}"; ((i++)) ;;
            -*) ;;
            *) if [[ -z "$command" ]]; then command="${{COMP_WORDS[i]}}"
               else ((positional++)); fi ;;
        esac
    done
    case "$prev" in
        --vin) COMPREPLY=($(compgen -W "$(fleetctl {HIDDEN} vins 2>/dev/null)" -- "$cur"))
               return ;;
        {files}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ -z "$command" ]]; then
        COMPREPLY=($(compgen -W "{" ".join(commands)}" -- "$cur")); return
    fi
    local flags="" words=""
    case "$command" in
{cases}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur")); return
    fi
    if [[ "$command" == logs || "$prev" == workload || "$prev" == workloads ]]; then
        local names
        names="$(fleetctl {HIDDEN} workloads ${{vin:+--vin "$vin"}} 2>/dev/null)"
        COMPREPLY=($(compgen -W "$names" -- "$cur"))
        return
    fi
    case "$command" in
{words}
    esac
    if [[ -n "$words" && $positional -eq 0 ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur")); return
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
}}
complete -F _fleetctl fleetctl
"""


def _fish(commands: dict[str, list[str]]) -> str:
    lines = [
        "# fleetctl completion for fish: fleetctl completion fish > "
        "~/.config/fish/completions/fleetctl.fish",
        "function __fleetctl_vin",
        "    set -l words (commandline -opc)",
        "    set -l i (contains -i -- --vin $words)",
        "    and echo --vin; and echo $words[(math $i + 1)]",
        "end",
        "complete -c fleetctl -f",
        f"complete -c fleetctl -n __fish_use_subcommand -a '{' '.join(commands)}'",
    ]
    for name, flags in commands.items():
        for flag in flags:
            option = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            lines.append(f"complete -c fleetctl -n '__fish_seen_subcommand_from {name}' {option}")
    for name, text in WORDS.items():
        lines.append(f"complete -c fleetctl -n '__fish_seen_subcommand_from {name}' -a '{text}'")
    lines += [
        f"complete -c fleetctl -l vin -x -a '(fleetctl {HIDDEN} vins 2>/dev/null)'",
        "complete -c fleetctl -n '__fish_seen_subcommand_from logs; or __fish_seen_subcommand_from "
        f"workload workloads' -a '(fleetctl {HIDDEN} workloads (__fleetctl_vin) 2>/dev/null)'",
        "complete -c fleetctl -n '__fish_seen_subcommand_from apply delete plan validate sign' -F",
    ]
    return "\n".join(lines) + "\n"
