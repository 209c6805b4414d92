# frozen_string_literal: true

# A one-file Rails application (Debian's Rails 6.1) mounting the connect
# proxy endpoint as an app would, run in a process of its own by
# connect_proxy_test.rb (a Rails application is one per process): it signs
# a user in with the Rails session (the encrypted cookie store), then the
# endpoint answers a proxy call that carries that cookie, as the gateway
# passes it on. Prints one JSON line with the answers.
$LOAD_PATH.unshift File.expand_path("../../lib", __dir__)

require "json"
require "rails"
require "action_controller/railtie"
require "pushgate"

class ProxyApp < Rails::Application
  config.root = __dir__
  config.eager_load = false
  config.secret_key_base = "1" * 64
  config.logger = Logger.new(nil)
  config.hosts.clear
end

class SessionsController < ActionController::Base
  def create
    session[:user_id] = Integer(params[:id])
    head :ok
  end
end

Rails.application.initialize!
Rails.application.routes.draw do
  get "/login", to: "sessions#create"
  post "/centrifugo/connect", to: Pushgate::ConnectProxy.new(ttl: 600)
end

app = Rack::MockRequest.new(Rails.application)
request = JSON.generate("client" => "", "transport" => "websocket", "protocol" => "json", "encoding" => "json")
login = app.get("/login?id=42")
cookie = login.headers["Set-Cookie"].split(";").first
signed_in = app.post("/centrifugo/connect", "HTTP_COOKIE" => cookie, input: request, "CONTENT_TYPE" => "application/json")
anonymous = app.post("/centrifugo/connect", input: request, "CONTENT_TYPE" => "application/json")
tampered = app.post("/centrifugo/connect", "HTTP_COOKIE" => cookie.sub(/=./, "=x"), input: request,
                                           "CONTENT_TYPE" => "application/json")
puts JSON.generate("signed_in" => JSON.parse(signed_in.body), "anonymous" => JSON.parse(anonymous.body),
                   "tampered" => JSON.parse(tampered.body), "status" => signed_in.status)
