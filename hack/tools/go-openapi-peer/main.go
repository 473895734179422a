// go-openapi-peer: one ResetDtsJob call through Alibaba Cloud's official Go OpenAPI stack
// (darabonba-openapi v2, Client.CallApi, RPC style, as the generated Go SDKs call it), for
// hack/bench-reset.sh. Usage: go-openapi-peer ENDPOINT JOB_ID (ENDPOINT a host[:port], plain
// http); AccessKey from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
package main

import (
	"fmt"
	"os"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	openapiutil "github.com/alibabacloud-go/darabonba-openapi/v2/utils"
	"github.com/alibabacloud-go/tea/dara"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-openapi-peer ENDPOINT JOB_ID")
		os.Exit(2)
	}
	client, err := openapi.NewClient(&openapi.Config{
		AccessKeyId:     dara.String(os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID")),
		AccessKeySecret: dara.String(os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")),
		Endpoint:        dara.String(os.Args[1]),
		Protocol:        dara.String("http"),
		RegionId:        dara.String("cn-hangzhou"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	params := &openapi.Params{
		Action: dara.String("ResetDtsJob"), Version: dara.String("2020-01-01"),
		Protocol: dara.String("HTTPS"), Pathname: dara.String("/"), Method: dara.String("POST"),
		AuthType: dara.String("AK"), Style: dara.String("RPC"),
		ReqBodyType: dara.String("formData"), BodyType: dara.String("json"),
	}
	query := map[string]interface{}{"DtsJobId": os.Args[2], "RegionId": "cn-hangzhou"}
	request := &openapi.OpenApiRequest{Query: openapiutil.Query(query)}
	resp, err := client.CallApi(params, request, &dara.RuntimeOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body, _ := resp["body"].(map[string]interface{})
	if body["Success"] != true && body["Success"] != "true" {
		fmt.Fprintln(os.Stderr, "not successful:", body)
		os.Exit(1)
	}
	fmt.Println(body["RequestId"])
}
