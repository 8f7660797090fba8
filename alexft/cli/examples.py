"""The examples at the end of each command's --help: what a user types for the common cases,
each under a comment saying what it does, so a line can be pasted into a shell as it stands.
tests/test_cli_contract.py parses every line against the command's own options."""

EXAMPLES = {
    "": [
        ("the top 5 ImageNet classes of a photo", "alexft classify poodle.png"),
        ("retrain fc8 on flowers/<class>/<images>", "alexft finetune --skip fc8 -o runs/flowers flowers/"),
        ("score the fine-tuned model on other labelled images",
         "alexft evaluate --weights runs/flowers/model.npz flowers-test/"),
        ("download the Caffe weights into the cache", "alexft weights fetch"),
    ],
    "classify": [
        ("the top 5 ImageNet classes of a photo", "alexft classify poodle.png"),
        ("every image below photos/, the best class of Caffe's ten crops",
         "alexft classify --ten-crop -k 1 photos/"),
        ("one JSON object per image, for scripts", "alexft classify --json photos/ > classes.jsonl"),
        ("with a fine-tuned model: its own classes",
         "alexft classify --weights runs/flowers/model.npz rose.jpg"),
        ("an image from standard input", "alexft classify - < poodle.png"),
    ],
    "evaluate": [
        ("a fine-tuned model on a folder with one sub-folder per class",
         "alexft evaluate --weights runs/flowers/model.npz flowers-test/"),
        ("the images a --val-split run held out, as its best epoch scored them",
         "alexft evaluate --weights runs/flowers/model.npz --list runs/flowers/val.txt --root flowers/"),
        ("ImageNet's validation set as Caffe scored it: a list file, and the ten crops",
         "alexft evaluate --list val.txt --root ILSVRC2012_img_val/ --ten-crop"),
        ("a report folder (per-class table, confusion matrix, misclassified images) and JSON",
         "alexft evaluate --report report/ --json flowers-test/"),
    ],
    "features": [
        ("fc7's 4096 activations of every image below photos/",
         "alexft features --layer fc7 -o fc7.npz photos/"),
        ("fc6 averaged over Caffe's ten crops (vectors only: a map's crops do not line up)",
         "alexft features --layer fc6 --ten-crop -o fc6.npz photos/"),
        ("pool5's maps of a class folder, with its labels", "alexft features --layer pool5 -o pool5.npz flowers/"),
    ],
    "finetune": [
        ("retrain fc8 on flowers/<class>/<images>, 20% held out per class",
         "alexft finetune --skip fc8 --val-split 0.2 -o runs/flowers flowers/"),
        ("also let fc6 and fc7 learn, for 20 epochs",
         "alexft finetune --skip fc8 --train fc6-fc8 --epochs 20 -o runs/flowers-fc6 flowers/"),
        ("go on with a run that was stopped (Ctrl-C, a reboot)", "alexft finetune --resume -o runs/flowers"),
        ("the final metrics as JSON", "alexft finetune --json -o runs/flowers-json flowers/ > result.json"),
    ],
    "export": [
        ("a SavedModel for TF Serving (version 1)", "alexft export --weights runs/flowers/model.npz serving/flowers/1"),
        ("a TF Lite file, int8, calibrated on your own images",
         "alexft export --format tflite --quantize int8 --calibration flowers/ flowers.tflite"),
        ("a Keras model, for keras.models.load_model", "alexft export --format keras alexnet.keras"),
    ],
    "weights fetch": [
        ("the Caffe weights into the cache, verified", "alexft weights fetch"),
        ("from a mirror, checked against the model zoo's SHA-1",
         "alexft weights fetch --url https://mirror.example/bvlc_alexnet.caffemodel"
         " --sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377 -o weights/"),
    ],
    "weights info": [
        ("what a weights file holds", "alexft weights info weights/bvlc_alexnet.npy"),
        ("the same as JSON", "alexft weights info --json runs/flowers/model.npz"),
    ],
    "weights convert": [
        ("Caffe's .caffemodel to alexft's .npz, the quickest to load",
         "alexft weights convert bvlc_alexnet.caffemodel weights/bvlc_alexnet.npz"),
        ("another model's classes stored with its weights",
         "alexft weights convert --class-names classes.txt my_net.caffemodel my_net.npz"),
    ],
}


def epilog(command):
    """The examples of `alexft COMMAND` as a --help epilog; `\\b` keeps click from rewrapping."""
    lines = ["\b", "Examples:"]
    for what, line in EXAMPLES[command]:
        lines += [f"  # {what}", f"  {line}"]
    return "\n".join(lines)
