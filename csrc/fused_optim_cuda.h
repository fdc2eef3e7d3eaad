// CUDA implementations of the `trainer::` ops (csrc/fused_optim_cuda.cu), registered for the CUDA
// dispatch key by csrc/fused_optim.cpp when the extension is built with -DTRAINER_WITH_CUDA.
// Same signatures and semantics as the CPU kernels of fused_optim.cpp; this header only needs ATen
// types, so the host compiler includes it without any CUDA header.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ATen_fwd.h>

#include <optional>

namespace trainer {
namespace cuda {

void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                 at::TensorList max_exp_avg_sqs, at::TensorList master_params, at::TensorList steps,
                 const at::Tensor& lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                 bool maximize, bool decoupled, const std::optional<at::Tensor>& grad_scale,
                 const std::optional<at::Tensor>& found_inf, const std::optional<at::Tensor>& clip_coef);

void fused_sgd(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
               at::TensorList master_params, const at::Tensor& lr, double momentum, double dampening,
               double weight_decay, bool nesterov, bool maximize, bool is_first_step,
               const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
               const std::optional<at::Tensor>& clip_coef);

void fused_lion(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList master_params,
                const at::Tensor& lr, double beta1, double beta2, double weight_decay, bool maximize,
                const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                const std::optional<at::Tensor>& clip_coef);

at::Tensor grad_norm(at::TensorList grads, const std::optional<at::Tensor>& grad_scale);

}  // namespace cuda
}  // namespace trainer
