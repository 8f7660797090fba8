"""Messages as a Python caller reads them: the command line's flags named as the keywords of the
function called (`--lr 0.01` as lr 0.01, `--no-cache` as cache=False).

alexft's messages are written once, in the command line's words; the Python entry points
(`finetune`, `export_model`) pass their log lines and their exceptions through here; and the
public functions' unknown keywords are refused with the keyword meant (`keywords_hinted`).
"""
import contextlib
import difflib
import functools
import inspect
import re

from .errors import AlexftError

_FLAG = re.compile(r"(?<![\w/.-])--[a-z][a-z-]*")
# A command to run ("check it with alexft evaluate DIR --weights RUN/model.npz") keeps its
# flags: it is run as written, from a shell.
_COMMAND = re.compile(r"\balexft [a-z][^;()]*")
_LAYERS = r"(?:conv[1-5]|fc[678]|all)(?:[-,](?:conv[1-5]|fc[678]))*"
# Flags given a value in a message, as a Python call gives it: --skip '' as skip="".
_VALUED = re.compile(rf"(?<![\w/.-])--(skip|train) (''|{_LAYERS})(?![\w-])|(?<![\w/.-])--(weights) (\S+?\.npz)(?!\w)")
_ADJACENT_ARGUMENTS = re.compile(r'(\b\w+="[^"]*") (?=\w+=")')
# A number given to a flag: --lr 0.000611 as lr=0.000611.
_NUMBER_VALUED = re.compile(r"(?<![\w/.-])--(lr|epochs|batch-size) (\d[\d.e+-]*\d|\d)(?!\w|\.\d)")

# Phrases, and flags whose keyword is not the flag's own name with underscores or which take no value.
_EITHER_ENTRY = {"give its path (--weights PATH on the command line, weights=PATH in Python)": "give its path (weights=PATH)"}
FINETUNE_KEYWORDS = {**_EITHER_ENTRY,
                     "--resume --output ": "resume=True, output=", "then --resume it": "then finetune(..., resume=True) continues it",
                     "--no-cache": "cache=False", "--cache": "cache=True", "--resume": "resume=True",
                     "--keep-checkpoint": "keep_checkpoint=True", "--keep-last": "keep_last=True",
                     "--ten-crop": "ten_crop_val=True", "--ten-crop:": "ten_crop_val:",
                     "--mixed-precision": "mixed_precision=True", "--train LAYERS": "train=LAYERS",
                     "--lr auto": 'lr="auto"', "--epochs N": "epochs=N", "give DATA_DIR": "give data_dir",
                     "give --weights: that file": "pass weights=PATH: that file",
                     "--cache/--no-cache: was --cache, now --no-cache": "cache: was True, now False",
                     "--cache/--no-cache: was --no-cache, now --cache": "cache: was False, now True"}
EXPORT_KEYWORDS = {**_EITHER_ENTRY,
                   "--format tflite": 'file_format="tflite"', "--format": "file_format",
                   "--quantize float16 or int8": 'quantization="float16" or "int8"',
                   "--quantize int8": 'quantization="int8"', "--quantize": "quantization",
                   "--precision bfloat16": 'precision="bfloat16"',
                   "--calibration DIR": "calibration=FOLDER", "--force": "force=True", "--top-k": "top_k",
                   "an OUTPUT ending": "an output ending", "another OUTPUT": "another output"}


def in_python_words(message, keywords=FINETUNE_KEYWORDS):
    """`message` with each flag outside a quoted command named as `keywords` say, or else as its
    keyword (`--val-split` as val_split)."""
    kept = [match.span() for match in _COMMAND.finditer(message)]
    parts, start = [], 0
    for begin, end in kept:
        parts += [_translated(message[start:begin], keywords), message[begin:end]]
        start = end
    return "".join(parts + [_translated(message[start:], keywords)])


def _translated(text, keywords):
    phrases = sorted((flags for flags in keywords if not _FLAG.fullmatch(flags)), key=len, reverse=True)
    for phrase in phrases:  # "--resume --output RUN" before "--resume"
        text = text.replace(phrase, keywords[phrase])
    text = _VALUED.sub(_as_keyword_argument, text)
    text = _ADJACENT_ARGUMENTS.sub(r"\1, ", text)  # skip="" train="fc8" as a call writes them
    text = _NUMBER_VALUED.sub(lambda match: f"{match.group(1).replace('-', '_')}={match.group(2)}", text)
    return _FLAG.sub(lambda flag: keywords.get(flag.group(), flag.group()[2:].replace("-", "_")), text)


def _as_keyword_argument(match):
    name, value = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return f'{name}="{value.strip(chr(39))}"'


@contextlib.contextmanager
def said_in_python_words(keywords):
    """alexft's errors raised inside, told in Python words: the same exception, its message
    translated (it is raised on to the caller with its type and attributes)."""
    try:
        yield
    except AlexftError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (in_python_words(error.args[0], keywords),) + error.args[1:]
        raise


# Other libraries' words for alexft's keywords, which spelling alone does not find (Keras' verbose,
# PyTorch's num_classes, topk / k), and alexft's own two words for replacing an output: its
# writers of data files take overwrite=, its exports and conversions force= (docs/commands.md).
_OTHER_LIBRARIES = {"verbose": "progress", "topk": "top_k", "k": "top_k", "tencrop": "ten_crop", "ten_crops": "ten_crop",
                    "input_size": "input_shape", "num_classes": "classes", "overwrite": "force", "force": "overwrite"}


def keywords_hinted(function):
    """`function`, whose unknown keyword arguments are refused as Python does, with the keyword
    it may have meant (finetune's are, by `_refuse_unknown_options`); checked at the call, before
    a generator's first item. Functions taking **kwargs are returned as they are."""
    parameters = inspect.signature(function).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return function
    known = [parameter.name for parameter in parameters
             if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]

    @functools.wraps(function)
    def hinted(*args, **kwargs):
        unknown = next((name for name in kwargs if name not in known), None)
        if unknown is not None:
            raise TypeError(f"{function.__name__}() got an unexpected keyword argument {unknown!r}"
                            + _meant(unknown, known, function.__name__))
        return function(*args, **kwargs)

    return hinted


def _meant(name, known, function_name):
    """'; did you mean X?' for a keyword `name` near one of `known`, else the keywords there are."""
    alias = _OTHER_LIBRARIES.get(name)
    if alias in known:
        return f"; did you mean {alias!r}?"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    if not close:  # (ten_crop for tencrop: the same letters without the underscores)
        close = [each for each in known if each.replace("_", "") == name.replace("_", "").lower()]
    return f"; did you mean {close[0]!r}?" if close else f"; {function_name}() takes {', '.join(known)}"
