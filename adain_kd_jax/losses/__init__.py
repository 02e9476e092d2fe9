"""Pure losses: array functions with no config and no Flax state.

Family modules, one test file each, sharing the checks and casts of
`checks`:
  * `adain_family`: channel statistics, AdaIN, the AdaIN loss, the
    statistics L2s, and the terms every method shares (cross-entropy, KD);
  * `baselines`: FitNet, attention transfer, decoupled KD;
  * `crd`: CRD's loss, memory bank and negative sampler;
  * `vid`: VID's Gaussian likelihood loss and adaptive average pooling;
  * `relational`: SP, CC, RKD and PKT, relations between a batch's examples;
  * `nst`: NST's kernel discrepancy of channel activation patterns;
  * `dist`: DIST's inter- and intra-class relations of the predictions;
  * `ofd`: OFD's margin and partial L2 on the maps before the ReLU;
  * `reviewkd`: ReviewKD's hierarchical context loss and nearest resize;
  * `kdsvd`: KDSVD's relations of singular vectors across stages;
  * `srrl`: SRRL's feature matching and softmax regression;
  * `two_stage`: FSP's and AB's losses, the methods distilled in a first
    training phase.
  * `ft`: FT's factor loss and its paraphraser's reconstruction loss.
  * `simkd`: SimKD's projected-feature MSE and its prediction through the
    teacher's classifier.
This module is their public face: `losses.<name>` for every public name.
"""

from adain_kd_jax.losses.checks import (
    as_float,
    check_4d,
    check_same_channels_and_batch,
)
from adain_kd_jax.losses.adain_family import (
    ADAIN_LOSS_KINDS,
    ADAIN_STATS,
    cross_entropy,
    kd,
    channel_stats,
    adain,
    adain_loss,
    stat_l2,
    stat_mean_l2,
)
from adain_kd_jax.losses.baselines import (
    feature_mse,
    hint_mse,
    attention_map,
    at,
    dkd_terms,
    dkd,
    dkd_warmup_factor,
)
from adain_kd_jax.losses.crd import (
    CRD_EPS,
    crd_embed_normalize,
    crd_memory_init,
    crd_contrast_scores,
    crd_memory_rows,
    crd_loss,
    crd_sample_contrast,
)
from adain_kd_jax.losses.vid import (
    VID_EPS,
    VID_INIT_PRED_VAR,
    adaptive_avg_pool,
    vid_alpha_init,
    vid_variance,
    vid_loss,
)
from adain_kd_jax.losses.relational import (
    NORMALIZE_EPS,
    PKT_EPS,
    RKD_DISTANCE_WEIGHT,
    RKD_ANGLE_WEIGHT,
    l2_normalize,
    sp_gram,
    sp_loss,
    cc_loss,
    rkd_pdist,
    rkd_loss,
    pkt_loss,
)
from adain_kd_jax.losses.nst import (
    nst_poly_kernel,
    nst_loss,
)
from adain_kd_jax.losses.dist import (
    DIST_EPS,
    dist_relations,
    dist_loss,
)
from adain_kd_jax.losses.ofd import (
    OFD_MIN_NEGATIVE_MASS,
    ofd_margin,
    ofd_partial_l2,
    ofd_loss,
)
from adain_kd_jax.losses.reviewkd import (
    HCL_LEVELS,
    nearest_resize,
    hcl_level,
    hcl_loss,
)
from adain_kd_jax.losses.kdsvd import (
    KDSVD_K,
    kdsvd_singular,
    kdsvd_align,
    kdsvd_loss,
)
from adain_kd_jax.losses.srrl import (
    srrl_terms,
    srrl_loss,
)
from adain_kd_jax.losses.two_stage import (
    AB_MARGIN,
    AB_SCALE,
    fsp_matrix,
    fsp_matrices,
    fsp_loss,
    ab_stage_loss,
    ab_loss,
)
from adain_kd_jax.losses.ft import (
    ft_factor,
    ft_loss,
    ft_reconstruction_loss,
)
from adain_kd_jax.losses.simkd import (
    simkd_aligned_size,
    simkd_align,
    simkd_loss,
    simkd_logits,
)
