"""The student specs the benchmarks time, in one place (speed.py and device_cost.py read them).

- mlp: the digits MLP, 64-32-10.
- conv1d: an MNIST-1D-like student, a 40-sample single-channel signal through three conv1d
  layers of 12 filters (kernel 5, stride 2, same padding), flattened into 10 logits.
- conv2d: a Fashion-MNIST-kind student, 28x28x1 channels-last: conv 8 k3, max-pool, conv 16 k3,
  max-pool, flatten, dense 10.
- teacher_mlp: a teacher-sized MLP, 64-256-256-10 (the matmul-peak row).
"""

MODELS = {
    "mlp": {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]},
    "conv1d": {"input_shape": [40, 1], "num_classes": 10, "layers": [
        {"type": "conv1d", "filters": 12, "kernel_size": 5, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "conv1d", "filters": 12, "kernel_size": 5, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "conv1d", "filters": 12, "kernel_size": 5, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 10}]},
    "conv2d": {"input_shape": [28, 28, 1], "num_classes": 10, "layers": [
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 10}]},
    "teacher_mlp": {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 256, "activation": "relu"}, {"type": "dense", "units": 10}]},
}
STUDENTS = ("mlp", "conv1d", "conv2d")
