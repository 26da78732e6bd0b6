"""A custom actor-critic agent from `agents.losses` on a JAX-native CartPole."""

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from agents import envs, losses

env, num_envs, horizon = envs.make("CartPole-v1"), 16, 16
net = hk.without_apply_rng(
    hk.transform(
        lambda x: (hk.nets.MLP([64, 64, 2])(x), hk.nets.MLP([64, 64, 1])(x)[..., 0])
    )
)
opt = optax.adam(3e-3)


def env_step(params, carry, key):  # one step of all envs: [B, ...]
    obs, env_state = carry
    act_key, step_key = jax.random.split(key)
    action = jax.random.categorical(act_key, net.apply(params, obs)[0])
    ts = jax.vmap(env.step)(jax.random.split(step_key, num_envs), env_state, action)
    done = ts.terminated | ts.truncated
    discount = 0.99 * (1.0 - ts.terminated)  # truncation ignored, as PureJaxRL
    return (ts.obs, ts.state), (obs, action, ts.reward, discount, done, ts.info)


def loss_fn(params, obs, action, reward, discount, last_obs):  # [T, B, ...]
    logits, values = net.apply(params, obs)
    values = jnp.concatenate([values, net.apply(params, last_obs)[1][None]])
    _, returns = losses.gae_batch(reward, discount, values, lambda_=0.95)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    loss, _ = losses.a2c_loss(
        flat(logits), flat(values[:-1]), flat(action), flat(returns)
    )
    return loss


@jax.jit
def update(params, opt_state, carry, key):
    step = lambda c, k: env_step(params, c, k)  # noqa: E731
    carry, (obs, act, rew, disc, done, info) = jax.lax.scan(
        step, carry, jax.random.split(key, horizon)
    )
    grads = jax.grad(loss_fn)(params, obs, act, rew, disc, carry[0])
    updates, opt_state = opt.update(grads, opt_state)
    mean_return = jnp.sum(info["episode_return"] * done) / jnp.maximum(done.sum(), 1)
    return optax.apply_updates(params, updates), opt_state, carry, mean_return


def main(num_updates: int = 300, seed: int = 0) -> list[float]:
    key = jax.random.key(seed)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
    params = net.init(key, obs)
    opt_state, carry, returns = opt.init(params), (obs, env_state), []
    for i in range(num_updates):
        params, opt_state, carry, mean_return = update(
            params, opt_state, carry, jax.random.fold_in(key, i)
        )
        returns.append(float(mean_return))
    return returns


if __name__ == "__main__":
    returns = main()
    print(f"mean episode return, last 20 updates: {sum(returns[-20:]) / 20:.1f}")
