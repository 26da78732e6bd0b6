"""nets: Haiku modules and network builders for jaxlab.

Three ways to define a network, all used through `hk.transform_with_state`:

1. a spec (layer list, functional graph or builtin module) -> `build_network`;
2. the ready-made modules (`MLP`, `ConvNet`, `LeNet`, `ResNet`, `LSTM`, `GRU`) and
   the convolutions they use (`Conv1D`, `Conv2D`, `Conv3D`: `hk.ConvND` that runs
   as patches and a matmul on a CPU, see `nets.conv`), and `Linear` (`hk.Linear`
   with a faster weight gradient on a CPU, reverse-mode only: `nets.linear`);
3. your own `hk.Module` subclass, Keras-"subclassing" style::

     class MyNet(hk.Module):
         def __call__(self, x, is_training):  # x: [B, 8, 8, 1]
             x = jax.nn.relu(nets.Conv2D(8, 3)(x))
             x = nets.Dropout(0.1)(hk.Flatten()(x), is_training)
             return hk.Linear(10)(x)  # [B, 10]

     net = hk.transform_with_state(lambda x, is_training: MyNet()(x, is_training))

   (`nets.LAYERS["Conv2D"](filters=8, kernel_size=3)` builds spec layers by hand;
   `tests/nets/test_nets_builder.py` checks a subclass against a spec.)

Everything outside `nets` sees only `init`/`apply` functions and params pytrees.
"""

from nets.activations import ACTIVATIONS as ACTIVATIONS
from nets.activations import activation_names as activation_names
from nets.activations import get_activation as get_activation
from nets.args import SpecError as SpecError
from nets.builder import Network as Network
from nets.builder import build_network as build_network
from nets.builder import validate_network_spec as validate_network_spec
from nets.conv import Conv1D as Conv1D
from nets.conv import Conv2D as Conv2D
from nets.conv import Conv3D as Conv3D
from nets.conv import ConvND as ConvND
from nets.layers import DEFAULT_REGULARIZER_SCALE as DEFAULT_REGULARIZER_SCALE
from nets.layers import LAYERS as LAYERS
from nets.layers import LayerDef as LayerDef
from nets.linear import Linear as Linear
from nets.modules import MLP as MLP
from nets.modules import ConvNet as ConvNet
from nets.modules import Dropout as Dropout
from nets.modules import LeNet as LeNet
from nets.modules import ResNet as ResNet
from nets.recurrent import GRU as GRU
from nets.recurrent import LSTM as LSTM
from nets.stats import activation_stats as activation_stats
from nets.stats import with_activation_stats as with_activation_stats

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_REGULARIZER_SCALE",
    "GRU",
    "LAYERS",
    "LSTM",
    "Linear",
    "MLP",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "ConvND",
    "ConvNet",
    "Dropout",
    "LayerDef",
    "LeNet",
    "Network",
    "ResNet",
    "SpecError",
    "activation_names",
    "activation_stats",
    "build_network",
    "get_activation",
    "validate_network_spec",
    "with_activation_stats",
]
