// Trains y = 2x + 1 with an installed weft; exits non-zero if it does not converge.
#include <weft/weft.h>

#include <cmath>
#include <cstdio>

int main() {
  weft::manual_seed(0);
  weft::nn::Linear fc(1, 1);
  weft::optim::SGD opt(fc->parameters(), {.lr = 0.1});
  weft::Tensor x = weft::rand({64, 1});
  weft::Tensor y = x * 2.0 + 1.0;
  float loss = 0;
  for (int i = 0; i < 500; ++i) {
    opt.zero_grad();
    weft::Tensor l = weft::nn::functional::mse_loss(fc(x), y);
    l.backward();
    opt.step();
    loss = l.item<float>();
  }
  std::printf("consumer: final loss %.2e, w=%.4f b=%.4f\n", loss, fc->weight.item<float>(),
              fc->bias.item<float>());
  return loss < 1e-4 ? 0 : 1;
}
