const { call, newKey } = require('../../utils/api');

const PHONE_PATTERN = /^\+?\d{6,15}$/;
// `failed` is not final for the buyer: the service refunds a failed top-up by itself, so the page
// keeps watching until the money is back (`refunded`).
const FINAL_STATUSES = ['success', 'refunded', 'closed'];
const POLL_INTERVAL_MS = 2000;
const POLL_TIMEOUT_MS = 60000;
// Once the top-up failed or a refund is under way, the page waits this much longer for it to settle.
const REFUND_WAIT_MS = 180000;

const STATUS_TEXT = {
  unpaid: '待支付 / Unpaid',
  paid: '已支付 / Paid',
  recharging: '充值中 / Recharging',
  success: '充值成功 / Delivered',
  failed: '充值失败 / Failed',
  unresolved: '充值确认中 / Being confirmed',
  refunding: '退款中 / Refunding',
  refunded: '已退款 / Refunded',
  closed: '已关闭 / Closed'
};

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function formatTime(iso) {
  const d = new Date(iso);
  if (isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// What the buyer should know beyond the status.
function noteFor(order) {
  const refunded = Number(order.refundAmount || 0) > 0;
  switch (order.status) {
    case 'failed':
    case 'refunding':
      return '充值未成功，款项将原路退回 / The top-up did not go through; your money is on its way back';
    case 'refunded':
      return '款项已原路退回 / Your money is back';
    case 'unresolved':
      return '运营商尚未确认，我们会继续跟进 / The carrier has not confirmed yet; we keep checking';
    case 'success':
      return refunded ? `已退款 ¥${order.refundAmount} / ¥${order.refundAmount} refunded` : '';
    default:
      return '';
  }
}

// Adds the fields the template shows, since WXML cannot call functions.
function present(order) {
  return {
    ...order,
    statusText: STATUS_TEXT[order.status] || order.status,
    note: noteFor(order),
    createdText: formatTime(order.createdAt)
  };
}

function requestPayment(params) {
  return new Promise((resolve, reject) => {
    wx.requestPayment({
      timeStamp: params.timeStamp,
      nonceStr: params.nonceStr,
      package: params.package,
      signType: params.signType,
      paySign: params.paySign,
      success: resolve,
      fail: reject
    });
  });
}

// Asks the buyer to be told when the top-up arrives or the money comes back. It must run in the tap
// that pays; whatever the buyer answers, the payment goes on.
function askForNotifications() {
  const tmplIds = getApp().globalData.subscribeTemplates || [];
  if (!tmplIds.length || !wx.requestSubscribeMessage) return Promise.resolve();
  return new Promise((resolve) => {
    wx.requestSubscribeMessage({ tmplIds, complete: () => resolve() });
  });
}

function toast(title) {
  wx.showToast({ title, icon: 'none', duration: 2500 });
}

Page({
  data: {
    products: [],
    selectedId: null,
    phone: '',
    phoneHint: '',
    canBuy: false,
    busy: false,
    current: null,
    orders: [],
    ordersTotal: 0
  },

  onLoad() {
    this.refresh();
  },

  async onPullDownRefresh() {
    await this.refresh();
    wx.stopPullDownRefresh();
  },

  async refresh() {
    await Promise.all([this.loadProducts(), this.loadOrders()]);
  },

  async loadProducts() {
    try {
      const products = await call('/products', 'GET');
      this.setData({ products });
    } catch (err) {
      toast(err.message);
    }
  },

  async loadOrders() {
    try {
      const page = await call('/orders?page=1&pageSize=10', 'GET');
      this.setData({ orders: page.items.map(present), ordersTotal: page.total });
    } catch (err) {
      toast(err.message);
    }
  },

  onSelectProduct(e) {
    this.setData({ selectedId: e.currentTarget.dataset.id });
    this.updateCanBuy();
  },

  onPhoneInput(e) {
    const phone = e.detail.value.trim();
    const phoneHint = phone && !PHONE_PATTERN.test(phone)
      ? 'Optional +, then 6–15 digits'
      : '';
    this.setData({ phone, phoneHint });
    this.updateCanBuy();
  },

  updateCanBuy() {
    const { selectedId, phone, busy } = this.data;
    this.setData({ canBuy: selectedId !== null && PHONE_PATTERN.test(phone) && !busy });
  },

  setBusy(busy) {
    this.setData({ busy });
    this.updateCanBuy();
  },

  async onBuy() {
    if (!this.data.canBuy) return;
    this.setBusy(true);
    try {
      // One key per tap: if the answer is lost and the call repeated, still one order.
      const key = newKey();
      const order = await call('/orders', 'POST', {
        productId: this.data.selectedId,
        phoneNumber: this.data.phone
      }, key);
      this.setData({ current: present(order) });
      await this.pay(order.orderNumber, key);
    } catch (err) {
      toast(err.message);
    } finally {
      this.setBusy(false);
      this.loadOrders();
    }
  },

  // Tapping an unpaid order in "My orders" pays it again; the service reuses the prepay.
  async onPayOrder(e) {
    if (this.data.busy) return;
    const { orderNumber, status } = e.currentTarget.dataset;
    if (status !== 'unpaid') return;
    this.setBusy(true);
    try {
      await this.pay(orderNumber);
    } catch (err) {
      toast(err.message);
    } finally {
      this.setBusy(false);
      this.loadOrders();
    }
  },

  async pay(orderNumber, key = newKey()) {
    await askForNotifications();
    const params = await call('/payment/create', 'POST', { orderNumber }, key);
    try {
      await requestPayment(params);
    } catch (err) {
      const cancelled = /cancel/.test(err.errMsg || '');
      toast(cancelled ? '支付已取消 / Payment cancelled' : '支付失败 / Payment failed');
      return;
    }
    await this.poll(orderNumber);
  },

  // requestPayment success only means the payment sheet was completed; the order is
  // paid once the service says so. ?refresh=true lets the service ask WeChat directly
  // instead of waiting for the payment callback.
  async poll(orderNumber) {
    let deadline = Date.now() + POLL_TIMEOUT_MS;
    let refundSeen = false;
    for (;;) {
      const order = await call(`/orders/${encodeURIComponent(orderNumber)}?refresh=true`, 'GET');
      this.setData({ current: present(order) });
      if (FINAL_STATUSES.includes(order.status)) return order;
      if (!refundSeen && (order.status === 'failed' || order.status === 'refunding')) {
        // The refund follows the failure by itself: give it time to settle.
        refundSeen = true;
        deadline = Date.now() + REFUND_WAIT_MS;
      }
      if (Date.now() >= deadline) {
        toast(refundSeen ? '退款处理中，请稍后查看 / Refund on its way — check My orders later'
          : 'Still processing — check My orders later');
        return order;
      }
      await sleep(POLL_INTERVAL_MS);
    }
  }
});
