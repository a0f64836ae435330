#!/usr/bin/python3
"""Generates the small ONNX models in tests/models/ that qtk's agreement test
(tests/ort/) runs in both qtk and ONNX Runtime: "unseen" graphs built from the
supported ops, in the shapes real exporters produce.

Run with Debian's python3-onnx:  /usr/bin/python3 tests/models/make_models.py
The outputs are committed; CI does not run this script. Weights come from a
fixed seed, so re-running it reproduces the same files byte for byte.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
F32 = TensorProto.FLOAT


def weight(rng, name, shape, fan_in=None, scale=None):
    """Initializer with N(0, 1/fan_in) entries (keeps activations O(1))."""
    if scale is None:
        scale = 1.0 / np.sqrt(fan_in if fan_in else shape[-1])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def const_i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def const_f32(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def finish(graph, path, doc, opset=OPSET, **save_kwargs):
    model = helper.make_model(graph, producer_name="qtk-make_models", doc_string=doc,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path, **save_kwargs)
    size = os.path.getsize(path)
    print(f"{os.path.relpath(path, HERE)}: {len(graph.node)} nodes, {size} bytes")
    return model


# (a) one pre-norm transformer encoder block -------------------------------------

def transformer_block(rng):
    S, D, H, F = 8, 32, 4, 64
    Dh = D // H
    inits = [
        weight(rng, "ln1.weight", [D], scale=0.2), weight(rng, "ln1.bias", [D], scale=0.1),
        weight(rng, "ln2.weight", [D], scale=0.2), weight(rng, "ln2.bias", [D], scale=0.1),
        weight(rng, "wq", [D, D], D), weight(rng, "bq", [D], scale=0.1),
        weight(rng, "wk", [D, D], D), weight(rng, "bk", [D], scale=0.1),
        weight(rng, "wv", [D, D], D), weight(rng, "bv", [D], scale=0.1),
        weight(rng, "wo", [D, D], D), weight(rng, "bo", [D], scale=0.1),
        weight(rng, "w1", [D, F], D), weight(rng, "b1", [F], scale=0.1),
        weight(rng, "w2", [F, D], F), weight(rng, "b2", [D], scale=0.1),
        const_i64("heads_shape", [0, 0, H, Dh]), const_i64("merge_shape", [0, 0, D]),
        const_f32("head_dim", Dh), const_f32("sqrt2", np.sqrt(2.0)),
        const_f32("one", 1.0), const_f32("half", 0.5),
    ]
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "ln1.weight", "ln1.bias"], ["ln1"], name="ln1", axis=-1, epsilon=1e-5),
    ]
    for p in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["ln1", f"w{p}"], [f"{p}_mm"], name=f"{p}_proj"),
            n("Add", [f"{p}_mm", f"b{p}"], [f"{p}_lin"], name=f"{p}_bias"),
            n("Reshape", [f"{p}_lin", "heads_shape"], [f"{p}_heads"], name=f"{p}_split_heads"),
        ]
    nodes += [
        n("Transpose", ["q_heads"], ["q_t"], name="q_transpose", perm=[0, 2, 1, 3]),
        n("Transpose", ["k_heads"], ["k_t"], name="k_transpose", perm=[0, 2, 3, 1]),
        n("Transpose", ["v_heads"], ["v_t"], name="v_transpose", perm=[0, 2, 1, 3]),
        n("MatMul", ["q_t", "k_t"], ["scores_raw"], name="scores"),
        n("Sqrt", ["head_dim"], ["scale"], name="scale"),
        n("Div", ["scores_raw", "scale"], ["scores"], name="scale_scores"),
        n("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        n("MatMul", ["probs", "v_t"], ["ctx_heads"], name="attend"),
        n("Transpose", ["ctx_heads"], ["ctx_t"], name="ctx_transpose", perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge_shape"], ["ctx"], name="merge_heads"),
        n("MatMul", ["ctx", "wo"], ["o_mm"], name="o_proj"),
        n("Add", ["o_mm", "bo"], ["attn_out"], name="o_bias"),
        n("Add", ["x", "attn_out"], ["res1"], name="residual1"),
        n("LayerNormalization", ["res1", "ln2.weight", "ln2.bias"], ["ln2"], name="ln2", axis=-1, epsilon=1e-5),
        n("MatMul", ["ln2", "w1"], ["ff1_mm"], name="ff1"),
        n("Add", ["ff1_mm", "b1"], ["ff1_out"], name="ff1_bias"),
        # GELU, erf form as torch.onnx exports it below opset 20.
        n("Div", ["ff1_out", "sqrt2"], ["gelu_div"], name="gelu_div"),
        n("Erf", ["gelu_div"], ["gelu_erf"], name="gelu_erf"),
        n("Add", ["gelu_erf", "one"], ["gelu_add"], name="gelu_add"),
        n("Mul", ["ff1_out", "gelu_add"], ["gelu_mul"], name="gelu_mul"),
        n("Mul", ["gelu_mul", "half"], ["gelu"], name="gelu_half"),
        n("MatMul", ["gelu", "w2"], ["ff2_mm"], name="ff2"),
        n("Add", ["ff2_mm", "b2"], ["ff2_out"], name="ff2_bias"),
        n("Add", ["res1", "ff2_out"], ["y"], name="residual2"),
    ]
    graph = helper.make_graph(
        nodes, "transformer_block",
        [helper.make_tensor_value_info("x", F32, ["batch", S, D])],
        [helper.make_tensor_value_info("y", F32, ["batch", S, D])],
        initializer=inits)
    finish(graph, os.path.join(HERE, "transformer_block.onnx"),
           "Pre-norm transformer encoder block: 4-head attention, erf GELU MLP.")


# (b) MobileNet-style convolutional net -----------------------------------------

def bn_params(rng, prefix, c):
    return [
        numpy_helper.from_array((1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}.scale"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}.bias"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}.mean"),
        numpy_helper.from_array((0.5 + rng.random(c)).astype(np.float32), f"{prefix}.var"),
    ]


def mobilenet_like(rng):
    n = helper.make_node
    inits = [
        weight(rng, "stem.w", [8, 3, 3, 3], 27), *bn_params(rng, "stem.bn", 8),
        weight(rng, "dw.w", [8, 1, 3, 3], 9), *bn_params(rng, "dw.bn", 8),
        weight(rng, "pw.w", [16, 8, 1, 1], 8), *bn_params(rng, "pw.bn", 16),
        weight(rng, "fuse.w", [16, 48, 3, 3], 48 * 9), weight(rng, "fuse.b", [16], scale=0.1),
        weight(rng, "up.w", [16, 8, 2, 2], 16 * 4), weight(rng, "up.b", [8], scale=0.1),
        weight(rng, "fc.w", [10, 8], 8), weight(rng, "fc.b", [10], scale=0.1),
        const_f32("relu6.min", 0.0), const_f32("relu6.max", 6.0),
        const_f32("up2", [1.0, 1.0, 2.0, 2.0]),
        const_i64("pad1", [0, 0, 1, 1, 0, 0, 1, 1]),
    ]
    bn = lambda x, p, y: n("BatchNormalization", [x, f"{p}.scale", f"{p}.bias", f"{p}.mean", f"{p}.var"], [y],
                           name=p, epsilon=1e-5)
    nodes = [
        # 3x16x16 -> 8x8x8
        n("Conv", ["image", "stem.w"], ["stem"], name="stem", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        bn("stem", "stem.bn", "stem_bn"),
        n("Clip", ["stem_bn", "relu6.min", "relu6.max"], ["stem_act"], name="stem_relu6"),
        # depthwise 3x3
        n("Conv", ["stem_act", "dw.w"], ["dw"], name="dw", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        bn("dw", "dw.bn", "dw_bn"),
        n("HardSwish", ["dw_bn"], ["dw_act"], name="dw_hswish"),
        # pointwise 1x1 -> 16x8x8
        n("Conv", ["dw_act", "pw.w"], ["pw"], name="pw", kernel_shape=[1, 1]),
        bn("pw", "pw.bn", "pw_bn"),
        n("Clip", ["pw_bn", "relu6.min", "relu6.max"], ["pw_act"], name="pw_relu6"),
        # pyramid branch: 16x4x4 pooled, upsampled back two ways
        n("AveragePool", ["pw_act"], ["pooled"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1], count_include_pad=0),
        # As torch.onnx exports F.interpolate(mode="nearest") ...
        n("Resize", ["pooled", "", "up2"], ["up_nearest"], name="up_nearest", mode="nearest",
          coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        # ... and F.interpolate(mode="bilinear", align_corners=False).
        n("Resize", ["pooled", "", "up2"], ["up_linear"], name="up_linear", mode="linear",
          coordinate_transformation_mode="pytorch_half_pixel"),
        n("Concat", ["pw_act", "up_nearest", "up_linear"], ["cat"], name="concat", axis=1),
        n("Pad", ["cat", "pad1"], ["padded"], name="pad", mode="constant"),
        n("Conv", ["padded", "fuse.w", "fuse.b"], ["fuse"], name="fuse", kernel_shape=[3, 3]),
        n("Relu", ["fuse"], ["fuse_act"], name="fuse_relu"),
        # 16x8x8 -> 8x16x16
        n("ConvTranspose", ["fuse_act", "up.w", "up.b"], ["up"], name="deconv", kernel_shape=[2, 2], strides=[2, 2]),
        n("GlobalAveragePool", ["up"], ["gap"], name="gap"),
        n("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        n("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mobilenet_like",
        [helper.make_tensor_value_info("image", F32, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", F32, ["N", 10])],
        initializer=inits)
    finish(graph, os.path.join(HERE, "mobilenet_like.onnx"),
           "MobileNet-style: depthwise conv, unfolded BN, ReLU6, HardSwish, resize pyramid, deconv.")


# (c) bidirectional LSTM followed by a GRU --------------------------------------

def lstm_gru(rng):
    T, I, HL, HG = 6, 8, 12, 10
    n = helper.make_node
    inits = [
        weight(rng, "lstm.W", [2, 4 * HL, I], I), weight(rng, "lstm.R", [2, 4 * HL, HL], HL),
        weight(rng, "lstm.B", [2, 8 * HL], scale=0.1),
        weight(rng, "gru.W", [1, 3 * HG, 2 * HL], 2 * HL), weight(rng, "gru.R", [1, 3 * HG, HG], HG),
        weight(rng, "gru.B", [1, 6 * HG], scale=0.1),
        weight(rng, "head.w", [HG, 4], HG), weight(rng, "head.b", [4], scale=0.1),
        const_i64("merge_dirs", [0, 0, 2 * HL]),
        const_i64("last.start", [-1]), const_i64("last.end", [np.iinfo(np.int64).max]), const_i64("axis0", [0]),
        const_i64("axis1", [1]), const_i64("zero", 0),
    ]
    nodes = [
        n("LSTM", ["seq", "lstm.W", "lstm.R", "lstm.B"], ["lstm_y", "lstm_h", "lstm_c"], name="lstm",
          hidden_size=HL, direction="bidirectional"),
        # [T, 2, N, HL] -> [T, N, 2, HL] -> [T, N, 2*HL]
        n("Transpose", ["lstm_y"], ["lstm_yt"], name="lstm_dirs_last", perm=[0, 2, 1, 3]),
        n("Reshape", ["lstm_yt", "merge_dirs"], ["lstm_out"], name="merge_dirs"),
        # PyTorch-style GRU
        n("GRU", ["lstm_out", "gru.W", "gru.R", "gru.B"], ["gru_y", "gru_h"], name="gru",
          hidden_size=HG, linear_before_reset=1),
        n("Squeeze", ["gru_y", "axis1"], ["gru_seq"], name="drop_dir"),
        # last time step: Slice [-1:] then Gather index 0
        n("Slice", ["gru_seq", "last.start", "last.end", "axis0"], ["gru_last1"], name="last_step"),
        n("Gather", ["gru_last1", "zero"], ["gru_last"], name="squeeze_time", axis=0),
        n("MatMul", ["gru_last", "head.w"], ["head_mm"], name="head"),
        n("Add", ["head_mm", "head.b"], ["scores"], name="head_bias"),
        # forward direction's final cell state, [N, HL]
        n("Gather", ["lstm_c", "zero"], ["lstm_c_fwd"], name="cell_fwd", axis=0),
    ]
    graph = helper.make_graph(
        nodes, "lstm_gru",
        [helper.make_tensor_value_info("seq", F32, [T, "batch", I])],
        [helper.make_tensor_value_info("scores", F32, ["batch", 4]),
         helper.make_tensor_value_info("gru_h", F32, [1, "batch", HG]),
         helper.make_tensor_value_info("lstm_c_fwd", F32, ["batch", HL])],
        initializer=inits)
    finish(graph, os.path.join(HERE, "lstm_gru.onnx"),
           "Bidirectional LSTM into a GRU (linear_before_reset), last step via Slice/Gather.")


# (d) If with different branches, weights in Constant nodes ---------------------

def constant(name, array):
    return helper.make_node("Constant", [], [name], name=f"const_{name}",
                            value=numpy_helper.from_array(np.asarray(array), name))


def if_constants(rng):
    n = helper.make_node
    D, O = 6, 3

    def then_branch(tag):
        # Dense + ReLU, its weight in a Constant node inside the branch; the bias
        # comes from the outer graph (outer-scope capture).
        return helper.make_graph([
            constant(f"{tag}_wt", (rng.standard_normal([D, O]) / np.sqrt(D)).astype(np.float32)),
            n("MatMul", ["x", f"{tag}_wt"], [f"{tag}_mm"], name=f"{tag}_mm"),
            n("Add", [f"{tag}_mm", "shared_bias"], [f"{tag}_lin"], name=f"{tag}_bias"),
            n("Relu", [f"{tag}_lin"], [f"{tag}_out"], name=f"{tag}_relu"),
        ], f"{tag}_graph", [], [helper.make_tensor_value_info(f"{tag}_out", F32, None)])

    def else_branch(tag):
        # Different op chain: scale, dense, tanh, sigmoid gate.
        return helper.make_graph([
            constant(f"{tag}_s", np.float32(0.5)),
            constant(f"{tag}_we", (rng.standard_normal([D, O]) / np.sqrt(D)).astype(np.float32)),
            n("Mul", ["x", f"{tag}_s"], [f"{tag}_scaled"], name=f"{tag}_scale"),
            n("MatMul", [f"{tag}_scaled", f"{tag}_we"], [f"{tag}_mm"], name=f"{tag}_mm"),
            n("Tanh", [f"{tag}_mm"], [f"{tag}_tanh"], name=f"{tag}_tanh"),
            n("Sigmoid", [f"{tag}_mm"], [f"{tag}_gate"], name=f"{tag}_sigmoid"),
            n("Mul", [f"{tag}_tanh", f"{tag}_gate"], [f"{tag}_out"], name=f"{tag}_gated"),
        ], f"{tag}_graph", [], [helper.make_tensor_value_info(f"{tag}_out", F32, None)])

    nodes = [
        constant("shared_bias", (0.1 * rng.standard_normal([O])).astype(np.float32)),
        constant("threshold", np.float32(0.0)),
        n("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
        n("Greater", ["mean", "threshold"], ["cond"], name="positive"),
        n("Not", ["cond"], ["not_cond"], name="negate"),
        # Two Ifs on opposite conditions, so every run takes one then- and one
        # else-branch whatever the data.
        n("If", ["cond"], ["if1_out"], name="if1",
          then_branch=then_branch("t1"), else_branch=else_branch("e1")),
        n("If", ["not_cond"], ["if2_out"], name="if2",
          then_branch=then_branch("t2"), else_branch=else_branch("e2")),
        n("Add", ["if1_out", "if2_out"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes, "if_constants",
        [helper.make_tensor_value_info("x", F32, ["batch", D])],
        [helper.make_tensor_value_info("y", F32, ["batch", O]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])])
    finish(graph, os.path.join(HERE, "if_constants.onnx"),
           "Data-dependent If with different branches; all weights in Constant nodes, none in initializers.")


# (e) PyTorch-style x.view(x.size(0), -1) flatten -------------------------------

def shape_flatten(rng):
    n = helper.make_node
    inits = [
        weight(rng, "conv.w", [4, 3, 3, 3], 27), weight(rng, "conv.b", [4], scale=0.1),
        weight(rng, "fc.w", [5, 4 * 4 * 4], 64), weight(rng, "fc.b", [5], scale=0.1),
    ]
    nodes = [
        n("Conv", ["input", "conv.w", "conv.b"], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["conv"], ["relu"], name="relu"),
        n("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        # the exporter's shape arithmetic, constants as Constant nodes like torch emits
        n("Shape", ["pool"], ["shape"], name="shape"),
        constant("idx0", np.int64(0)),
        n("Gather", ["shape", "idx0"], ["batch_dim"], name="batch_dim", axis=0),
        constant("unsq_axes", np.array([0], dtype=np.int64)),
        n("Unsqueeze", ["batch_dim", "unsq_axes"], ["batch_1d"], name="unsqueeze"),
        constant("minus1", np.array([-1], dtype=np.int64)),
        n("Concat", ["batch_1d", "minus1"], ["new_shape"], name="concat", axis=0),
        n("Reshape", ["pool", "new_shape"], ["flat"], name="view"),
        n("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "shape_flatten",
        [helper.make_tensor_value_info("input", F32, ["batch_size", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", F32, ["batch_size", 5])],
        initializer=inits)
    finish(graph, os.path.join(HERE, "shape_flatten.onnx"),
           "Shape->Gather->Unsqueeze->Concat->Reshape flatten with a dynamic batch.")


# (f) weights in an external data file ------------------------------------------

def external_mlp(rng):
    n = helper.make_node
    inits = [
        weight(rng, "fc1.weight", [32, 20], 20), weight(rng, "fc1.bias", [32], scale=0.1),
        weight(rng, "fc2.weight", [32, 32], 32), weight(rng, "fc2.bias", [32], scale=0.1),
        weight(rng, "fc3.weight", [7, 32], 32), weight(rng, "fc3.bias", [7], scale=0.1),
    ]
    nodes = [
        n("Gemm", ["features", "fc1.weight", "fc1.bias"], ["h1"], name="fc1", transB=1),
        n("Relu", ["h1"], ["a1"], name="relu1"),
        n("Gemm", ["a1", "fc2.weight", "fc2.bias"], ["h2"], name="fc2", transB=1),
        n("Sigmoid", ["h2"], ["a2"], name="sigmoid2"),
        n("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["h3"], name="fc3", transB=1),
        n("LogSoftmax", ["h3"], ["log_probs"], name="log_softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "external_mlp",
        [helper.make_tensor_value_info("features", F32, ["batch", 20])],
        [helper.make_tensor_value_info("log_probs", F32, ["batch", 7])],
        initializer=inits)
    path = os.path.join(HERE, "external", "external_mlp.onnx")
    bin_name = "external_mlp.weights"
    if os.path.exists(os.path.join(HERE, "external", bin_name)):
        os.remove(os.path.join(HERE, "external", bin_name))  # onnx.save appends to it
    finish(graph, path, "MLP whose initializers live in external_mlp.weights.",
           save_as_external_data=True, all_tensors_to_one_file=True, location=bin_name, size_threshold=0)
    onnx.checker.check_model(path)  # checks the external file is found


def main():
    rng = np.random.default_rng(20240607)
    transformer_block(rng)
    mobilenet_like(rng)
    lstm_gru(rng)
    if_constants(rng)
    shape_flatten(rng)
    external_mlp(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
