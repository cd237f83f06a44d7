// Calls the service through WeChat Cloud Hosting. The platform adds the caller's
// X-WX-OPENID header, so there is no login step. `idempotencyKey` (one per tap) makes a
// repeated request get the first answer instead of a second order.
function call(path, method = 'GET', data, idempotencyKey) {
  const { env, service } = getApp().globalData;
  const header = {
    'X-WX-SERVICE': service,
    'content-type': 'application/json'
  };
  if (idempotencyKey) header['Idempotency-Key'] = idempotencyKey;
  return new Promise((resolve, reject) => {
    wx.cloud.callContainer({
      config: { env },
      path,
      method,
      header,
      data,
      success(res) {
        if (res.statusCode >= 200 && res.statusCode < 300) {
          resolve(res.data);
          return;
        }
        // The service always answers errors with {"code": "...", "message": "..."}.
        const body = res.data || {};
        const error = new Error(body.message || `HTTP ${res.statusCode}`);
        error.code = body.code;
        error.statusCode = res.statusCode;
        reject(error);
      },
      fail(err) {
        reject(new Error(err.errMsg || 'request failed'));
      }
    });
  });
}

// A fresh key for one tap: visible ASCII, unique enough per buyer.
function newKey() {
  return `tap-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;
}

module.exports = { call, newKey };
