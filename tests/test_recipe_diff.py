"""Our recipes against the configs the zoo models were trained with, written here in MMAction2's
own config syntax (0.x for the TIN and TANet configs, 1.x for TPN) from the seeds' and
models.md's settings: every setting compared, each seed config equal to its zoo config where the
seeds say it is, a changed value reported with both values, the lr scaled to the log's GPUs."""

from __future__ import annotations

import pytest

from vidtempo import config
from vidtempo.report import recipe_diff as R
from vidtempo.report import zoo_log

# The zoo's settings as the MMAction2 config files state them (its tables per zoo config), written here as
# literals, not read from our YAML; `None`: the spec does not state it, and the config below is
# written with the recipe's value (listed, so that it is plain what is checked against what).
COSINE_STHV1 = ("dict(policy='CosineAnnealing', min_lr_ratio=0.5, warmup='linear', "
                "warmup_ratio=0.1, warmup_by_epoch=True, warmup_iters=1)")
COSINE_STHV2 = ("dict(policy='CosineAnnealing', by_epoch=False, min_lr=0, warmup='linear', "
                "warmup_by_epoch=True, warmup_iters=1)")
TIN = dict(T=8, shift=4, classes=174, dropout=0.8, std=0.001, avg=None, dense=False, fixed=5,
           flip=None, test=("CenterCrop", 224), twice=False, vpg=6, lr=0.02, wd=5e-4, clip=20,
           lr_config=COSINE_STHV1, epochs=40, interval=None)
TANET = dict(T=8, classes=174, dropout=0.6, std=0.001, avg="prob", dense=False, fixed=13,
             flip=0.5, test=("ThreeCrop", 256), twice=True, vpg=8, lr=0.01, wd=1e-3, clip=20,
             lr_config="dict(policy='step', step=[30, 40, 45])", epochs=50, interval=None)
TPN = dict(classes=400, T=8, shift=8, dropout=0.5, std=0.01, aux=0.5, clips=(8, 8), test_clips=10,
           val_jitter=True, test=("ThreeCrop", 256), twice=False, vpg=8, lr=0.01, wd=1e-4, clip=40,
           steps=[75, 125], epochs=150, interval=None)
ZOO = {
    "tin_r50_1x1x8_40e_sthv1_rgb": TIN,
    "tin_r50_1x1x8_40e_sthv2_rgb": {**TIN, "lr_config": COSINE_STHV2, "interval": 2},
    "tin_tsm_finetune_r50_1x1x8_50e_kinetics400_rgb": {
        **TIN, "classes": 400, "dropout": 0.5, "flip": 0.5, "lr": 0.01, "wd": 1e-4,
        "lr_config": "dict(policy='step', step=[20, 40])", "epochs": 50},
    "tanet_r50_dense_1x1x8_100e_kinetics400_rgb": {
        **TANET, "classes": 400, "dropout": 0.5, "dense": True, "twice": False, "wd": 1e-4,
        "lr_config": "dict(policy='step', step=[50, 75, 90])", "epochs": 100},
    "tanet_r50_1x1x8_50e_sthv1_rgb": TANET,
    "tanet_r50_1x1x16_50e_sthv1_rgb": {**TANET, "T": 16, "lr": 0.005, "vpg": 4},
    "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb": TPN,
    "tpn-slowonly_imagenet-pretrained-r50_8xb8-8x8x1-150e_kinetics400-rgb": TPN,
    "tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb": {
        **TPN, "classes": 174, "clips": (1, 1), "test_clips": 8, "val_jitter": False,
        "twice": True, "wd": 5e-4, "clip": 20},
}
FROM_RECIPE = {"train.val_interval"}  # where ZOO says None (the spec does not state it)
NORM = "img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)"


def config_0x(c: config.Config, z: dict) -> str:
    """A 0.x config of a TSM-family zoo config (TIN, TANet) in MMAction2's syntax, its settings
    from `z` (ZOO)."""
    backbone = {"tin": "ResNetTIN", "tanet": "TANet"}[c.model.arch.split("_")[0]]
    shift = f", shift_div={z['shift']}" if backbone == "ResNetTIN" else ""
    kind = "DenseSampleFrames" if z["dense"] else "SampleFrames"
    dense = ", sample_range=64" if z["dense"] else ""
    dense_test = ", sample_range=64, num_sample_positions=10" if z["dense"] else ""
    twice = ", twice_sample=True" if z["twice"] else ""
    flip = (f"\n    dict(type='Flip', flip_ratio={z['flip']}, flip_label_map=flip_map),"
            if z["flip"] else "")  # fmt: skip
    avg = None if z["avg"] is None else repr(z["avg"])
    interval = z["interval"] or c.train.val_interval
    return f"""model = dict(
    type='Recognizer2D',
    backbone=dict(type='{backbone}', pretrained='torchvision://resnet50', depth=50,
                  num_segments={z['T']}, norm_eval=False{shift}),
    cls_head=dict(type='TSMHead', num_classes={z['classes']}, in_channels=2048,
                  spatial_type='avg', consensus=dict(type='AvgConsensus', dim=1),
                  dropout_ratio={z['dropout']}, init_std={z['std']}, is_shift=True),
    train_cfg=None,
    test_cfg=dict(average_clips={avg}))
dataset_type = 'RawframeDataset'
data_root = 'data/rawframes'
flip_map = {{86: 87, 87: 86}}
{NORM}
train_pipeline = [
    dict(type='{kind}', clip_len=1, frame_interval=1, num_clips={z['T']}{dense}),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='MultiScaleCrop', input_size=224, scales=(1, 0.875, 0.75, 0.66),
         random_crop=False, max_wh_scale_gap=1, num_fixed_crops={z['fixed']}),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),{flip}
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs', 'label'])
]
val_pipeline = [
    dict(type='{kind}', clip_len=1, frame_interval=1, num_clips={z['T']}, test_mode=True{dense_test}),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
test_pipeline = [
    dict(type='{kind}', clip_len=1, frame_interval=1, num_clips={z['T']}, test_mode=True{twice}{dense_test}),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='{z['test'][0]}', crop_size={z['test'][1]}),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
data = dict(
    videos_per_gpu={z['vpg']}, workers_per_gpu=2,
    train=dict(type=dataset_type, ann_file=f'{{data_root}}/train.txt', data_prefix=data_root,
               pipeline=train_pipeline),
    val=dict(type=dataset_type, ann_file='val.txt', data_prefix=data_root, pipeline=val_pipeline),
    test=dict(type=dataset_type, ann_file='val.txt', data_prefix=data_root, pipeline=test_pipeline))
evaluation = dict(interval={interval}, metrics=['top_k_accuracy', 'mean_class_accuracy'])
optimizer = dict(type='SGD', constructor='TSMOptimizerConstructor', paramwise_cfg=dict(fc_lr5=True),
                 lr={z['lr']}, momentum=0.9, weight_decay={z['wd']})
optimizer_config = dict(grad_clip=dict(max_norm={z['clip']}, norm_type=2))
lr_config = {z['lr_config']}
total_epochs = {z['epochs']}
checkpoint_config = dict(interval=1)
log_config = dict(interval=20, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
work_dir = './work_dirs/{c.name}/'
load_from = None
resume_from = None
workflow = [('train', 1)]
gpu_ids = range(0, 8)
"""


def config_1x(c: config.Config, z: dict) -> str:
    """A 1.x TPN zoo config (SlowOnly or TSM trunk) in MMAction2's syntax, its settings from `z`."""
    slow = c.model.arch.startswith("tpn_slowonly")
    backbone = ("dict(type='ResNet3dSlowOnly', depth=50, pretrained=None, lateral=False, "
                "out_indices=(2, 3), conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1, "
                "inflate=(0, 0, 1, 1), norm_eval=False)" if slow else
                "dict(type='ResNetTSM', pretrained='torchvision://resnet50', depth=50, "
                f"num_segments={z['T']}, out_indices=(2, 3), norm_eval=False, shift_div={z['shift']})")  # fmt: skip
    fmt = "NCTHW" if slow else "NCHW"
    clip_len, interval = z["clips"]
    frames = z["T"] if slow else 1
    num = 1 if slow else z["T"]
    twice = ", twice_sample=True" if z["twice"] else ""
    jitter = "\n    dict(type='ColorJitter')," if z["val_jitter"] else ""
    val_interval = z["interval"] or c.train.val_interval
    return f"""_base_ = ['../../_base_/default_runtime.py']
model = dict(
    type='{'Recognizer3D' if slow else 'Recognizer2D'}',
    backbone={backbone},
    neck=dict(type='TPN', in_channels=(1024, 2048), out_channels=1024,
              aux_head_cfg=dict(out_channels={z['classes']}, loss_weight={z['aux']})),
    cls_head=dict(type='TPNHead', num_classes={z['classes']}, in_channels=2048,
                  spatial_type='avg', consensus=dict(type='AvgConsensus', dim=1),
                  dropout_ratio={z['dropout']}, init_std={z['std']}, average_clips='prob'),
    data_preprocessor=dict(type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], format_shape='{fmt}'),
    test_cfg=dict(fcn_test=True))
file_client_args = dict(io_backend='disk')
train_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len={frames}, frame_interval={interval if slow else 1}, num_clips={num}),
    dict(type='DecordDecode'),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='ColorJitter'),
    dict(type='FormatShape', input_format='{fmt}'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len={frames}, frame_interval={interval if slow else 1}, num_clips={num},
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),{jitter}
    dict(type='FormatShape', input_format='{fmt}'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len={frames}, frame_interval={interval if slow else 1},
         num_clips={z['test_clips']}, test_mode=True{twice}),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='{z['test'][0]}', crop_size={z['test'][1]}),
    dict(type='FormatShape', input_format='{fmt}'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(batch_size={z['vpg']}, num_workers=8, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={z['epochs']}, val_begin=1,
                 val_interval={val_interval})
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr={z['lr']}, momentum=0.9, weight_decay={z['wd']}, nesterov=True),
    clip_grad=dict(max_norm={z['clip']}, norm_type=2))
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end={z['epochs']}, by_epoch=True,
         milestones={z['steps']}, gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
"""


# what our recipes leave to MMAction2's defaults (the zoo configs do not name them) and the
# recipes' own departures from the zoo config, each said in the recipe's YAML
NOT_NAMED = {"model.partial_bn"}
DEPARTURES: dict[str, set[str]] = {}


@pytest.mark.parametrize("name", config.zoo_names())
def test_each_seed_recipe_against_its_zoo_config(name):
    cfg = config.load(name)
    z = ZOO[name]
    text = (config_1x if cfg.model.arch.startswith("tpn") else config_0x)(cfg, z)
    mm = R.mm_config(text)
    assert "_unread" not in mm, mm.get("_unread")
    rows = R.diff(cfg, mm, gpus=zoo_log.gpus_of(text) or 8)
    by = {r["key"]: r for r in rows}
    different = {k for k, r in by.items() if r["status"] == "different"}
    absent = {k for k, r in by.items() if r["status"].startswith("not in the log")}
    assert different == DEPARTURES.get(name, set()), [by[k] for k in different]
    assert absent <= NOT_NAMED | {"model.fcn_test"}, absent
    # every kind of setting the issue names is compared
    for key in ("model.num_segments", "data.train.sampler.num_clips", "data.train.crop.kind",
                "data.val.crop.size", "data.test.sampler.num_clips", "optim.lr",
                "optim.weight_decay", "schedule.kind", "optim.grad_clip", "train.epochs",
                "train.val_interval", "train.videos_per_gpu", "data.mean"):  # fmt: skip
        assert by[key]["status"] == "equal", by[key]
    scaled = next(r for r in rows if r["key"].startswith("optim.lr at the log's"))
    assert scaled["status"] == "equal" and "8 GPUs" in scaled["key"]
    if cfg.model.arch.startswith(("tin", "tpn_tsm")):
        want = 4 if cfg.model.arch.startswith("tin") else 8
        assert by["model.shift_div"]["status"] == "equal" and by["model.shift_div"]["zoo"] == want
    else:
        assert "model.shift_div" not in by  # nothing shifts in TANet and SlowOnly


def test_a_changed_setting_is_reported_with_both_values_and_the_lr_scaled_to_the_logs_gpus():
    cfg = config.load("tin_r50_1x1x8_40e_sthv1_rgb")
    text = config_0x(cfg, ZOO[cfg.name]).replace("lr=0.02,", "lr=0.01,").replace("num_fixed_crops=5",
                                                                  "num_fixed_crops=13")  # fmt: skip
    text = text.replace("gpu_ids = range(0, 8)", "gpu_ids = range(0, 4)")
    rows = {r["key"]: r for r in R.diff(cfg, R.mm_config(text), zoo_log.gpus_of(text))}
    assert rows["optim.lr"] == {"key": "optim.lr", "ours": 0.02, "zoo": 0.01, "status": "different"}
    assert rows["data.train.crop.num_fixed_crops"]["zoo"] == 13
    # our base lr 0.02 is for 8 GPUs × 6 videos; on the log's 4 GPUs × 6 the rule gives 0.01
    scaled = rows["optim.lr at the log's 4 GPUs × 6 videos"]
    assert scaled["ours"] == pytest.approx(0.01) and scaled["status"] == "equal"
    text = R.markdown(list(rows.values()), cfg.name, "x.log")
    assert text.index("| optim.lr | 0.02 | 0.01 | different |") < text.index("| equal |")


def test_config_syntax_it_reads_and_what_it_refuses():
    mm = R.mm_config("a = 2\nb = dict(x=a * 3, **dict(y=[1, 2]))\nc = f'{a}-x'\nd = (-1, 256)\n"
                     "e = some_function(1)\nimport os\nfor i in range(2):\n    pass\n")  # fmt: skip
    assert mm["b"] == {"x": 6, "y": [1, 2]} and mm["c"] == "2-x" and mm["d"] == (-1, 256)
    assert any(u.startswith("e:") for u in mm["_unread"]) and any("For" in u for u in mm["_unread"])
    with pytest.raises(R.MMConfigError, match="not MMAction2's Python config syntax"):
        R.mm_config("model = dict(\n")
