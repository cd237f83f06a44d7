// Calls the service through WeChat Cloud Hosting. The platform adds the caller's
// X-WX-OPENID header, so there is no login step.
function call(path, method = 'GET', data) {
  const { env, service } = getApp().globalData;
  return new Promise((resolve, reject) => {
    wx.cloud.callContainer({
      config: { env },
      path,
      method,
      header: {
        'X-WX-SERVICE': service,
        'content-type': 'application/json'
      },
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

module.exports = { call };
