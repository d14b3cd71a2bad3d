// dcx::shuffled_partitioned_linear and its three gradient ops, written once against Views and an
// adapter's Call (base/op_aten.h, base/op_executorch.h): argument checks with the messages users see,
// and the calls into the C kernels.
#pragma once

#include "base/op_args.h"
#include "partitioned_linear/partitioned_linear.h"

namespace dcx::partitioned_linear {

struct Dims {
  int64_t n = 0, d_in = 0, d_out = 0, p = 0;
};

// x [..., d_in], weight [P, d_out/P, d_in/P], bias [d_out] or absent.
inline std::string check_forward(const Op& op, const View& x, const View& w, const View& b, Dims* d) {
  for (const View* t : {&x, &w, &b}) DCX_TRY(op.tensor(*t));
  if (w.dim != 3) return op.fail("weight must have shape [P, d_out/P, d_in/P], got " + shape_str(w));
  if (x.dim < 1) return op.fail("x must have at least 1 dim [..., d_in], got a scalar");
  const int64_t P = w.sizes[0], bo = w.sizes[1], bi = w.sizes[2];
  if (P < 1 || bo < 1 || bi < 1) return op.fail("weight " + shape_str(w) + " has an empty dim");
  const int64_t d_in = x.size(-1);
  if (d_in % P)
    return op.fail("x's last dim " + std::to_string(d_in) + " is not divisible by P=" + std::to_string(P) +
                   " (weight.shape[0]); choose P dividing d_in");
  if (d_in != P * bi)
    return op.fail("x's last dim " + std::to_string(d_in) + " does not match weight " + shape_str(w) +
                   ", which expects d_in = P * d_in/P = " + std::to_string(P * bi));
  if (b.present && (b.dim != 1 || b.sizes[0] != P * bo))
    return op.fail("bias must have shape [d_out] = [" + std::to_string(P * bo) + "] for weight " + shape_str(w) +
                   ", got " + shape_str(b));
  *d = Dims{x.numel() / d_in, d_in, P * bo, P};
  return "";
}

// grad_y [..., d_out] with d_out divisible by p (and equal to d_out_expected when that is >= 0)
inline std::string check_grad(const Op& op, const View& gy, int64_t p, int64_t d_out_expected, Dims* d) {
  DCX_TRY(op.tensor(gy));
  if (gy.dim < 1) return op.fail("grad_y must have at least 1 dim");
  if (p < 1) return op.fail("partitions must be >= 1, got " + std::to_string(p));
  const int64_t d_out = gy.size(-1);
  if (d_out % p)
    return op.fail("grad_y's last dim " + std::to_string(d_out) + " is not divisible by P=" + std::to_string(p));
  if (d_out_expected >= 0 && d_out != d_out_expected)
    return op.fail("grad_y's last dim " + std::to_string(d_out) + " does not match d_out=" +
                   std::to_string(d_out_expected));
  d->d_out = d_out;
  d->p = p;
  d->n = gy.numel() / d_out;
  return "";
}

// v's shape with its last dim replaced
inline Shape with_last(const View& v, int64_t last) {
  Shape s = shape_of(v);
  s.s[s.dim - 1] = last;
  return s;
}

template <class Call>
void shuffled_partitioned_linear(Call& c) {
  const LinearArgs a = read_linear(c);  // flag: shuffle
  Dims d;
  if (!c.ok(check_forward(c.op(), a.x, a.w, a.b, &d))) return;
  if (float* y = c.out(with_last(a.x, d.d_out)))
    c.kernel(partitioned_linear_forward(a.x.f(), a.w.f(), a.b.f(), d.n, d.d_in, d.d_out, d.p, a.flag, y));
}

template <class Call>
void shuffled_partitioned_linear_grad_input(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), w = c.tensor("weight");
  const bool shuffle = c.flag();
  if (!c.ok(op.tensor(w))) return;
  if (w.dim != 3) return (void)c.ok(op.fail("weight must have shape [P, d_out/P, d_in/P], got " + shape_str(w)));
  const int64_t P = w.sizes[0], bo = w.sizes[1], bi = w.sizes[2];
  Dims d;
  if (!c.ok(check_grad(op, gy, P, P * bo, &d))) return;
  if (float* gx = c.out(with_last(gy, P * bi)))
    c.kernel(partitioned_linear_backward_input(gy.f(), w.f(), d.n, P * bi, d.d_out, P, shuffle, gx));
}

template <class Call>
void shuffled_partitioned_linear_grad_weight(Call& c) {
  const Op& op = c.op();
  const View gy = c.tensor("grad_y"), x = c.tensor("x");
  const int64_t partitions = c.integer();
  const bool shuffle = c.flag();
  Dims d;
  if (!c.ok(op.tensor(x)) || !c.ok(check_grad(op, gy, partitions, -1, &d))) return;
  if (x.dim < 1 || x.size(-1) % partitions)
    return (void)c.ok(op.fail("x's last dim must be divisible by partitions=" + std::to_string(partitions) +
                              ", got x of shape " + shape_str(x)));
  const int64_t d_in = x.size(-1);
  if (x.numel() / (d_in > 0 ? d_in : 1) != d.n)
    return (void)c.ok(op.fail("x " + shape_str(x) + " and grad_y " + shape_str(gy) + " have different numbers of rows"));
  if (float* gw = c.out(shape({partitions, d.d_out / partitions, d_in / partitions})))
    c.kernel(partitioned_linear_backward_weight(gy.f(), x.f(), d.n, d_in, d.d_out, partitions, shuffle, gw));
}

template <class Call>
void shuffled_partitioned_linear_grad_bias(Call& c) {
  const View gy = c.tensor("grad_y");
  const int64_t partitions = c.integer();
  const bool shuffle = c.flag();
  Dims d;
  if (!c.ok(check_grad(c.op(), gy, partitions, -1, &d))) return;
  if (float* gb = c.out(shape({d.d_out})))
    c.kernel(partitioned_linear_backward_bias(gy.f(), d.n, d.d_out, partitions, shuffle, gb));
}

}  // namespace dcx::partitioned_linear
