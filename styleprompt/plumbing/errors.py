"""The one exception a user mistake raises.

Why a single type: every entry point (CLI, app, scripts) catches it and prints its message as
one line with exit code 2, so a bad file or flag never shows a traceback. It lives in this leaf
module (no imports at all) so that `classic` raises the same type without `styleprompt`'s
heavy parts, and without owning the project's plumbing itself.
"""


class UserError(Exception):
    """A problem with the user's input: the message says what is wrong and what to do."""


class SettingError(UserError):
    """A setting's value is wrong; the message names the setting, each front end in its own words.

    Why: the library is called by the CLI (flags: `--lr`), the app (field labels: "Learning
    rate") and scripts (keyword arguments: `lr`). The library writes `{setting}` where the
    setting's name goes; `str(error)` names it as the library does (`lr must be ...`), and
    `named(label)` as the caller does. `setting` is the name of the library's own argument or
    config field, the key of `classic.limits.BOUNDS` for bounded numbers.
    """

    def __init__(self, setting: str, template: str) -> None:
        self.setting = setting
        self.template = template
        super().__init__(self.named(setting))

    def named(self, name: str) -> str:
        """The message with the setting called `name` (a flag, a field label)."""
        return self.template.replace("{setting}", name)


def cli_flag(setting: str) -> str:
    """The flag a setting has on the command line: `lr` -> `--lr`, `init_word` -> `--init-word`
    (a setting already spelled as a flag stays as it is)."""
    return setting if setting.startswith("-") else "--" + setting.replace("_", "-")


def cli_message(exc: UserError, flags: dict[str, str] | None = None) -> str:
    """The one line a command line prints: a setting named as its flag (`flags` for the settings
    whose flag is not their name, such as `fmt` -> `--to`)."""
    if isinstance(exc, SettingError):
        text = exc.named((flags or {}).get(exc.setting) or cli_flag(exc.setting))
    else:
        text = str(exc)
    return one_line(text)


def one_line(text: str) -> str:
    """`text` on one line, whatever a message site put in it: a file name with a newline or an
    undecodable byte (a surrogate from os.fsdecode) is shown escaped, never split or mangled (the
    last guard behind `files.shown_path`, which the message sites use)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogates(text) else text


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)
